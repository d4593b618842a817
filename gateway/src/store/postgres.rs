//! The shared store: several gateway replicas on one PostgreSQL database (docs/scale-out.md).
//!
//! What it holds: the gateway's metadata, the policy (one document per version, with its change
//! entries), the consents with their history, and the audit indexes of every replica's trail,
//! each record with its canonical payload so that a query on any replica sees all of them. The
//! trails themselves stay on each replica's disk, one hash chain per replica.
//!
//! Every change that other replicas must see is announced in the same transaction with
//! `pg_notify('passerelle', …)` (delivered only if the transaction commits); [`follow`] listens
//! on each replica and applies them.
//!
//! The [`Store`] trait is synchronous (the control plane and the audit indexer call it from
//! blocking threads), tokio-postgres is not: the store runs its connection on a small runtime
//! of its own and each call waits for its answer, bounded by `store.timeout_ms`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_postgres_rustls_improved::MakeRustlsConnect;

use super::{Store, StoreError};
use crate::audit::index::{AuditIndex, IndexEntry, Location, Selector, SharedRecord};
use crate::consent::{Consent, Registry};
use crate::policy::PolicyHandle;

/// The notification channel.
pub const CHANNEL: &str = "passerelle";

/// The schema migrations, in order; each is applied once, in one transaction.
const MIGRATIONS: &[(i32, &str)] =
    &[(1, include_str!("../../migrations/0001_init.sql")), (2, include_str!("../../migrations/0002_consent_feed.sql"))];

/// Serialises the writes of consents between replicas, so that their feed numbers
/// (`consents.seq`) follow the commit order (an arbitrary, fixed key).
const CONSENT_LOCK: i64 = 0x636f_6e73_656e;

/// Serialises migrations between replicas starting together (an arbitrary, fixed key).
const MIGRATION_LOCK: i64 = 0x7061_7373_6572;

/// How long the indexer gathers records before one shared-index write: one round trip and
/// one transaction for many group commits (the gateway's own queries wait for its index).
const INDEX_WINDOW: Duration = Duration::from_millis(20);

/// A batch of consents larger than this is announced as one "read the feed from where you are".
const NOTIFY_EACH_UP_TO: usize = 64;

type PgFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

/// The PostgreSQL store of one replica.
pub struct PgStore {
    replica: String,
    config: tokio_postgres::Config,
    /// TLS to the database (`[store.tls]`); `None`: plain TCP.
    tls: Option<MakeRustlsConnect>,
    timeout: Duration,
    /// The runtime that drives the connection; shut down in the background on drop (the store
    /// may be dropped inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// One connection, one call at a time (transactions need it to themselves); re-opened on the
    /// next call after it breaks.
    client: Slot,
    /// The audit indexer's own connection, with `synchronous_commit` off: the index can always
    /// be rebuilt from the trail, so its commits need not wait for the WAL flush (everything
    /// else on `client` does).
    index_client: Slot,
}

type Slot = Arc<tokio::sync::Mutex<Option<Client>>>;

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("PgStore").field("replica", &self.replica).finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn config(url: &str, timeout: Duration, tls: bool) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| StoreError::Unavailable(format!("store.url: {e}")))?;
    match (tls, cfg.get_ssl_mode()) {
        // With TLS configured, never fall back to plain TCP.
        (true, SslMode::Prefer) => {
            cfg.ssl_mode(SslMode::Require);
        }
        (false, SslMode::Require) => {
            return Err(StoreError::Unavailable(
                "store.url asks for TLS (sslmode=require) but store.tls (at least its ca) is not set".into(),
            ));
        }
        _ => {}
    }
    cfg.connect_timeout(timeout);
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(10));
    if cfg.get_application_name().is_none() {
        cfg.application_name("passerelle");
    }
    Ok(cfg)
}

/// Opens a connection (TLS when configured) and drives it on the current runtime.
async fn connect(cfg: &tokio_postgres::Config, tls: Option<&MakeRustlsConnect>) -> Result<Client, StoreError> {
    fn drive<S, T>(connection: Connection<S, T>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "store connection closed");
            }
        });
    }
    match tls {
        None => {
            let (client, connection) = cfg.connect(NoTls).await?;
            drive(connection);
            Ok(client)
        }
        Some(t) => {
            let (client, connection) = cfg.connect(t.clone()).await?;
            drive(connection);
            Ok(client)
        }
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl PgStore {
    /// Connects (over TLS with `tls`), applies the migrations this database lacks, and returns
    /// the store of `replica`.
    pub fn open(
        url: &str,
        replica: &str,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, StoreError> {
        let config = config(url, timeout, tls.is_some())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("store runtime: {e}")))?;
        let store = PgStore {
            replica: replica.to_owned(),
            config,
            tls: tls.map(MakeRustlsConnect::new),
            timeout,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            client: Arc::new(tokio::sync::Mutex::new(None)),
            index_client: Arc::new(tokio::sync::Mutex::new(None)),
        };
        let applied = store.call(|c| Box::pin(migrate(c)))?;
        if applied > 0 {
            tracing::info!(migrations = applied, "store schema migrated");
        }
        store.meta_put("format", b"passerelle-postgres-1")?;
        Ok(store)
    }

    /// Runs `f` on the store's connection (opened first if needed) and waits for it.
    fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Client) -> PgFuture<'c, T> + Send + 'static,
    {
        self.call_on(&self.client, "", f)
    }

    /// Runs `f` on the connection in `slot`; a new connection first runs `setup`.
    fn call_on<T, F>(&self, slot: &Slot, setup: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Client) -> PgFuture<'c, T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (slot, cfg, timeout, tls) = (slot.clone(), self.config.clone(), self.timeout, self.tls.clone());
        self.handle.spawn(async move {
            let result = tokio::time::timeout(timeout, async {
                let mut guard = slot.lock().await;
                if guard.as_ref().is_none_or(Client::is_closed) {
                    *guard = None;
                    let client = connect(&cfg, tls.as_ref()).await?;
                    if !setup.is_empty() {
                        client.batch_execute(setup).await?;
                    }
                    *guard = Some(client);
                }
                match guard.as_mut() {
                    Some(client) => {
                        let r = f(client).await;
                        if r.is_err() && client.is_closed() {
                            *guard = None;
                        }
                        r
                    }
                    None => Err(StoreError::Unavailable("no connection".into())),
                }
            })
            .await;
            let result = match result {
                Ok(r) => r,
                Err(_) => {
                    // A call that hangs leaves a connection in an unknown state: open a new one.
                    if let Ok(mut guard) = slot.try_lock() {
                        *guard = None;
                    }
                    Err(StoreError::Unavailable(format!("no answer within {} ms", timeout.as_millis())))
                }
            };
            let _ = tx.send(result);
        });
        rx.recv().map_err(|_| StoreError::Unavailable("the store's runtime stopped".into()))?
    }

    /// Writes consents and their events in one transaction, announced to every replica.
    pub fn consent_put(&self, consents: &[Consent], events: &[String]) -> Result<(), StoreError> {
        self.consent_write(consents, events, true).map(drop)
    }

    /// Writes, in one transaction announced to every replica, the consents whose id the
    /// database does not hold yet, with their events; returns their indices in `consents`.
    pub fn consent_put_new(&self, consents: &[Consent], events: &[String]) -> Result<Vec<usize>, StoreError> {
        let written: std::collections::HashSet<String> =
            self.consent_write(consents, events, false)?.into_iter().collect();
        Ok(consents.iter().enumerate().filter(|(_, c)| written.contains(&c.id)).map(|(i, _)| i).collect())
    }

    /// Writes consents (over those of the same id with `replace`, else only those the
    /// database lacks) and the events of those written; returns the ids written.
    fn consent_write(&self, consents: &[Consent], events: &[String], replace: bool) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = consents.iter().map(|c| c.id.clone()).collect();
        let subjects: Vec<String> = consents.iter().map(|c| c.subject.clone()).collect();
        let docs: Vec<Vec<u8>> = consents.iter().map(|c| serde_json::to_vec(c).unwrap_or_default()).collect();
        let evs: Vec<Vec<u8>> = events.iter().map(|e| e.clone().into_bytes()).collect();
        let conflict = if replace {
            "DO UPDATE SET subject = EXCLUDED.subject, document = EXCLUDED.document, seq = nextval('consent_seq')"
        } else {
            "DO NOTHING"
        };
        let insert = format!(
            "INSERT INTO consents (id, subject, document) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
             ON CONFLICT (id) {conflict} RETURNING id, seq"
        );
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                // Numbers taken under the lock, held to the commit: they follow the commit order.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CONSENT_LOCK]).await?;
                let rows = tx.query(&insert, &[&ids, &subjects, &docs]).await?;
                let written: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
                // One event per consent written (an id twice in a batch is written once).
                let mut keep: std::collections::HashSet<&str> = written.iter().map(String::as_str).collect();
                let (ev_ids, ev_docs): (Vec<&String>, Vec<&Vec<u8>>) =
                    ids.iter().zip(&evs).filter(|(id, _)| replace || keep.remove(id.as_str())).unzip();
                tx.execute(
                    "INSERT INTO consent_events (consent_id, event) SELECT * FROM unnest($1::text[], $2::bytea[])",
                    &[&ev_ids, &ev_docs],
                )
                .await?;
                if rows.len() <= NOTIFY_EACH_UP_TO {
                    for r in &rows {
                        let (id, seq): (&str, i64) = (r.get(0), r.get(1));
                        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("consent {id} {seq}")]).await?;
                    }
                } else {
                    let last = rows.iter().map(|r| r.get::<_, i64>(1)).max().unwrap_or(0);
                    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("consents {last}")]).await?;
                }
                tx.commit().await?;
                Ok(written)
            })
        })
    }

    pub fn consent_get(&self, id: &str) -> Result<Option<Consent>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Box::pin(async move {
                let row = c.query_opt("SELECT document FROM consents WHERE id = $1", &[&id]).await?;
                Ok(row.and_then(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).ok()))
            })
        })
    }

    pub fn consent_of_subject(&self, subject: &str) -> Result<Vec<Consent>, StoreError> {
        let subject = subject.to_owned();
        self.call(move |c| {
            Box::pin(async move {
                let rows = c.query("SELECT document FROM consents WHERE subject = $1", &[&subject]).await?;
                Ok(rows.iter().filter_map(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).ok()).collect())
            })
        })
    }

    pub fn consent_history(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            Box::pin(async move {
                let rows =
                    c.query("SELECT event FROM consent_events WHERE consent_id = $1 ORDER BY id", &[&id]).await?;
                Ok(rows.iter().filter_map(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).ok()).collect())
            })
        })
    }

    /// The last number of the consents' feed (0: none written yet).
    pub fn consent_feed_position(&self) -> Result<i64, StoreError> {
        self.call(|c| {
            Box::pin(async move {
                let row = c.query_one("SELECT coalesce(max(seq), 0) FROM consents", &[]).await?;
                Ok(row.get(0))
            })
        })
    }

    /// The consents written after feed number `after`, in feed order, with the last number read.
    pub fn consent_feed_after(&self, after: i64) -> Result<(Vec<Consent>, i64), StoreError> {
        self.call(move |c| {
            Box::pin(async move {
                let rows = c.query("SELECT seq, document FROM consents WHERE seq > $1 ORDER BY seq", &[&after]).await?;
                let last = rows.last().map_or(after, |r| r.get(0));
                let consents = rows.iter().filter_map(|r| serde_json::from_slice(r.get::<_, &[u8]>(1)).ok()).collect();
                Ok((consents, last))
            })
        })
    }

    pub fn consent_all(&self) -> Result<Vec<Consent>, StoreError> {
        self.call(|c| {
            Box::pin(async move {
                let rows = c.query("SELECT document FROM consents", &[]).await?;
                Ok(rows.iter().filter_map(|r| serde_json::from_slice(r.get::<_, &[u8]>(0)).ok()).collect())
            })
        })
    }
}

/// Applies the migrations the database lacks; returns how many.
async fn migrate(c: &mut Client) -> Result<usize, StoreError> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS passerelle_migrations (\
            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let done: Vec<i32> =
        tx.query("SELECT version FROM passerelle_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(newest) = done.iter().copied().max().filter(|v| *v > known) {
        return Err(StoreError::Unavailable(format!(
            "the database's schema is at version {newest}, newer than this gateway's ({known}); upgrade the gateway"
        )));
    }
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO passerelle_migrations (version) VALUES ($1)", &[version]).await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            Box::pin(async move {
                let row = c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key]).await?;
                Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
            })
        })
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&key, &value],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn meta_create(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                        &[&key, &value],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
    }

    fn meta_swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let (key, old, new) = (key.to_owned(), old.to_vec(), new.to_vec());
        self.call(move |c| {
            Box::pin(async move {
                let n =
                    c.execute("UPDATE meta SET value = $3 WHERE key = $1 AND value = $2", &[&key, &old, &new]).await?;
                Ok(n == 1)
            })
        })
    }

    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_owned();
        self.call(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT key, value FROM meta WHERE left(key, char_length($1)) = $1 ORDER BY key COLLATE \"C\"",
                        &[&prefix],
                    )
                    .await?;
                Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1))).collect())
            })
        })
    }

    fn policy_current(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.call(|c| {
            Box::pin(async move {
                let row = c.query_opt("SELECT version, document FROM policy_current", &[]).await?;
                Ok(row.map(|r| (u64_of(r.get(0)), r.get::<_, Vec<u8>>(1))))
            })
        })
    }

    /// Version N+1 is committed only while N is current (or N+1 itself with the same document:
    /// the change entry is being rewritten); otherwise another replica got there first and the
    /// caller gets [`StoreError::Conflict`].
    fn policy_commit(&self, version: u64, document: &[u8], change: &[u8]) -> Result<(), StoreError> {
        let (v, doc, change) = (i64_of(version), document.to_vec(), change.to_vec());
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                // Lock the row (or, on an empty table, the table's first insert) for the check.
                tx.execute("LOCK TABLE policy_current IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
                let cur = tx.query_opt("SELECT version, document = $1 FROM policy_current", &[&doc]).await?;
                let (cur_v, same_doc) = cur.map_or((0, false), |r| (r.get::<_, i64>(0), r.get::<_, bool>(1)));
                if !(cur_v == v - 1 || (cur_v == v && same_doc)) {
                    return Err(StoreError::Conflict(format!(
                        "policy version {cur_v} is current; version {v} was prepared on an older one"
                    )));
                }
                tx.execute(
                    "INSERT INTO policy_current (one, version, document) VALUES (true, $1, $2) \
                     ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version, document = EXCLUDED.document",
                    &[&v, &doc],
                )
                .await?;
                tx.execute(
                    "INSERT INTO policy_changes (version, change) VALUES ($1, $2) \
                     ON CONFLICT (version) DO UPDATE SET change = EXCLUDED.change",
                    &[&v, &change],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("policy {v}")]).await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn policy_revert(&self, version: u64, previous: Option<(u64, &[u8])>) -> Result<(), StoreError> {
        let v = i64_of(version);
        let previous = previous.map(|(pv, doc)| (i64_of(pv), doc.to_vec()));
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.execute("LOCK TABLE policy_current IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
                let cur: Option<i64> = tx.query_opt("SELECT version FROM policy_current", &[]).await?.map(|r| r.get(0));
                if cur == Some(v) {
                    match &previous {
                        Some((pv, doc)) => {
                            tx.execute("UPDATE policy_current SET version = $1, document = $2", &[pv, doc]).await?;
                        }
                        None => {
                            tx.execute("DELETE FROM policy_current", &[]).await?;
                        }
                    }
                    tx.execute("DELETE FROM policy_changes WHERE version = $1", &[&v]).await?;
                    tx.execute("SELECT pg_notify($1, 'policy')", &[&CHANNEL]).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn policy_changes(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let (after, limit) = (i64_of(after), i64::try_from(limit).unwrap_or(i64::MAX));
        self.call(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT change FROM policy_changes WHERE version > $1 ORDER BY version LIMIT $2",
                        &[&after, &limit],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
            })
        })
    }
}

impl AuditIndex for PgStore {
    fn wants_payload(&self) -> bool {
        true
    }

    fn batch_window(&self) -> Duration {
        INDEX_WINDOW
    }

    fn replica(&self) -> Option<&str> {
        Some(&self.replica)
    }

    fn audit_index(&self, entries: &[IndexEntry]) -> Result<(), StoreError> {
        let replica = self.replica.clone();
        let mut seqs = Vec::with_capacity(entries.len());
        let mut times = Vec::with_capacity(entries.len());
        let mut callers = Vec::with_capacity(entries.len());
        let mut segments = Vec::with_capacity(entries.len());
        let mut offsets = Vec::with_capacity(entries.len());
        let mut payloads = Vec::with_capacity(entries.len());
        let (mut s_keys, mut s_times, mut s_seqs) = (Vec::new(), Vec::new(), Vec::new());
        for e in entries {
            let Some(p) = &e.payload else {
                return Err(StoreError::Unavailable(format!("record {} reached the index without its payload", e.seq)));
            };
            seqs.push(i64_of(e.seq));
            times.push(i64_of(e.time_ms));
            callers.push(e.keys.caller().map(str::to_owned));
            segments.push(i64_of(e.segment));
            offsets.push(i64_of(e.offset));
            payloads.push(p.clone());
            for (i, s) in e.keys.subjects().enumerate() {
                if e.keys.subjects().take(i).any(|t| t == s) {
                    continue; // one row per (subject, record)
                }
                s_keys.push(s.to_owned());
                s_times.push(i64_of(e.time_ms));
                s_seqs.push(i64_of(e.seq));
            }
        }
        // One statement (atomic on its own), one round trip, on the indexer's connection. Plain
        // inserts: the indexer sends each record once (after a failure it resumes from the
        // highest sequence number stored), and a duplicate fails the batch, which then catches
        // up from there.
        self.call_on(&self.index_client, "SET synchronous_commit TO off", move |c| {
            Box::pin(async move {
                c.execute(
                    "WITH records AS (\
                       INSERT INTO audit_records (replica, seq, time_ms, caller, segment, \"offset\", payload) \
                       SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bytea[])) \
                     INSERT INTO audit_subjects (subject, time_ms, replica, seq) \
                     SELECT s, t, $1, q FROM unnest($8::text[], $9::bigint[], $10::bigint[]) AS u(s, t, q)",
                    &[&replica, &seqs, &times, &callers, &segments, &offsets, &payloads, &s_keys, &s_times, &s_seqs],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn audit_indexed_seq(&self) -> Result<u64, StoreError> {
        let replica = self.replica.clone();
        self.call(move |c| {
            Box::pin(async move {
                let row = c
                    .query_one("SELECT coalesce(max(seq), 0) FROM audit_records WHERE replica = $1", &[&replica])
                    .await?;
                Ok(u64_of(row.get(0)))
            })
        })
    }

    /// This replica's records only (locations in its own trail); queries that must see every
    /// replica use [`AuditIndex::audit_shared`].
    fn audit_query(
        &self,
        selector: &Selector,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Location>, StoreError> {
        let rows = self.select(selector, from_ms, to_ms, limit, false)?;
        Ok(rows.into_iter().map(|r| Location { seq: r.seq, segment: r.segment, offset: r.offset }).collect())
    }

    fn audit_shared(
        &self,
        selector: &Selector,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Option<Vec<SharedRecord>>, StoreError> {
        let rows = self.select(selector, from_ms, to_ms, limit, true)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let record = serde_json::from_slice(&r.payload)
                .map_err(|e| StoreError::Unavailable(format!("record {} of replica {}: {e}", r.seq, r.replica)))?;
            out.push(SharedRecord { replica: r.replica, record });
        }
        Ok(Some(out))
    }
}

struct Row {
    replica: String,
    seq: u64,
    segment: u64,
    offset: u64,
    payload: Vec<u8>,
}

impl PgStore {
    /// The index rows `selector` matches: of every replica with their payloads (`shared`), or
    /// of this replica only, locations alone.
    fn select(
        &self,
        selector: &Selector,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
        shared: bool,
    ) -> Result<Vec<Row>, StoreError> {
        let (from, to) = (i64_of(from_ms), i64_of(to_ms));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let replica = (!shared).then(|| self.replica.clone());
        let cols = if shared {
            "r.replica, r.seq, r.segment, r.\"offset\", r.payload"
        } else {
            "r.replica, r.seq, r.segment, r.\"offset\", ''::bytea"
        };
        let (sql, key) = match selector {
            Selector::Subject(s) => (
                format!(
                    "SELECT {cols} FROM audit_subjects s JOIN audit_records r ON r.replica = s.replica AND r.seq = s.seq \
                     WHERE s.subject = $1 AND s.time_ms BETWEEN $2 AND $3 AND ($4::text IS NULL OR r.replica = $4) \
                     ORDER BY s.time_ms, r.replica, r.seq LIMIT $5"
                ),
                Some(s.clone()),
            ),
            Selector::Caller(k) => (
                format!(
                    "SELECT {cols} FROM audit_records r WHERE r.caller = $1 AND r.time_ms BETWEEN $2 AND $3 \
                     AND ($4::text IS NULL OR r.replica = $4) ORDER BY r.time_ms, r.replica, r.seq LIMIT $5"
                ),
                Some(k.clone()),
            ),
            // No key: `$1` is always NULL, so that every query takes the same parameters.
            Selector::Time => (
                format!(
                    "SELECT {cols} FROM audit_records r WHERE $1::text IS NULL AND r.time_ms BETWEEN $2 AND $3 \
                     AND ($4::text IS NULL OR r.replica = $4) ORDER BY r.time_ms, r.replica, r.seq LIMIT $5"
                ),
                None,
            ),
        };
        self.call(move |c| {
            Box::pin(async move {
                let rows = c.query(sql.as_str(), &[&key, &from, &to, &replica, &limit]).await?;
                Ok(rows
                    .iter()
                    .map(|r| Row {
                        replica: r.get(0),
                        seq: u64_of(r.get(1)),
                        segment: u64_of(r.get(2)),
                        offset: u64_of(r.get(3)),
                        payload: r.get(4),
                    })
                    .collect())
            })
        })
    }
}

/// Whether this replica holds every change made through the others. While it does not (its
/// notification connection is down, or it is re-reading), the data plane refuses with
/// `STORE_UNAVAILABLE` rather than decide on a policy or a consent that may have changed.
#[derive(Debug, Default)]
pub struct SyncState {
    in_sync: AtomicBool,
    /// How many times every consent was read (the first connection; a feed that cannot be
    /// followed).
    pub full_reads: std::sync::atomic::AtomicU64,
    /// How many consents the catch-ups after a reconnection read from the feed.
    pub caught_up: std::sync::atomic::AtomicU64,
}

impl SyncState {
    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Acquire)
    }

    fn set(&self, v: bool) {
        self.in_sync.store(v, Ordering::Release);
    }
}

/// How often the listener checks its connection when no notification arrives.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Follows the other replicas' changes until `shutdown`: listens on [`CHANNEL`] over a
/// connection of its own; after connecting it re-reads the policy and, the first time, every
/// consent; after a reconnection only the consents written since the last feed number it saw
/// (`consents.seq`). Only then is the replica marked in sync. Losing the connection marks it
/// out of sync at once.
pub async fn follow(
    store: Arc<PgStore>,
    policy: Arc<PolicyHandle>,
    consent: Arc<Registry>,
    state: Arc<SyncState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    // The last number of the consents' feed this replica holds; none before the first read.
    let mut position: Option<i64> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match listen_once(&store, &policy, &consent, &state, &mut shutdown, &mut position).await {
            Ok(()) => return,
            Err(e) => {
                if state.in_sync() {
                    tracing::error!(error = %e, "lost the store's notifications: refusing calls until re-synchronised");
                } else {
                    tracing::warn!(error = %e, "store notifications unavailable; retrying");
                }
                state.set(false);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn listen_once(
    store: &Arc<PgStore>,
    policy: &Arc<PolicyHandle>,
    consent: &Arc<Registry>,
    state: &SyncState,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    position: &mut Option<i64>,
) -> Result<(), StoreError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    // Named, so that an operator (or a test) can tell the follower's connection apart.
    let mut config = store.config.clone();
    config.application_name(format!("passerelle-follow-{}", store.replica));
    let (client, pump) = match &store.tls {
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, pump_notifications(connection, tx))
        }
        Some(t) => {
            let (client, connection) = config.connect(t.clone()).await?;
            (client, pump_notifications(connection, tx))
        }
    };
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Listening first, then re-reading: a change committed in between is both read and
        // notified, and applying it twice is harmless.
        resync(store, policy, consent, state, position).await?;
        state.set(true);
        tracing::info!("store notifications followed; replica in sync");
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Ok(payload)) => apply(&payload, store, policy, consent, position).await?,
                    Some(Err(e)) => return Err(StoreError::Unavailable(e)),
                    None => return Err(StoreError::Unavailable("notification stream ended".into())),
                },
                _ = heartbeat.tick() => {
                    tokio::time::timeout(store.timeout, client.simple_query("SELECT 1"))
                        .await
                        .map_err(|_| StoreError::Unavailable("the store stopped answering".into()))??;
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
    .await;
    pump.abort();
    result
}

/// Drives the listening connection, passing each notification's payload (or the error that
/// ended it) to `tx`.
fn pump_notifications<S, T>(
    mut connection: Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<Result<String, String>>,
) -> tokio::task::JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok(n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
        let _ = tx.send(Err("connection closed".into()));
    })
}

/// Re-reads the policy, and every consent the first time or the consents written since
/// `position` after a reconnection.
async fn resync(
    store: &Arc<PgStore>,
    policy: &Arc<PolicyHandle>,
    consent: &Arc<Registry>,
    state: &SyncState,
    position: &mut Option<i64>,
) -> Result<(), StoreError> {
    let (s, p, c, from) = (store.clone(), policy.clone(), consent.clone(), *position);
    let (last, read, full) = tokio::task::spawn_blocking(move || {
        p.refresh(s.as_ref()).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        match from {
            Some(after) => {
                let (changed, last) = s.consent_feed_after(after)?;
                let n = changed.len();
                c.index_all(&changed);
                tracing::info!(consents = n, version = p.version(), "caught up with the shared store");
                Ok::<_, StoreError>((last, n, false))
            }
            None => {
                // The position first: a consent written meanwhile is read twice, never missed.
                let last = s.consent_feed_position()?;
                let n = c.reload()?;
                tracing::info!(consents = n, version = p.version(), "re-read the shared store");
                Ok((last, n, true))
            }
        }
    })
    .await
    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
    if full {
        state.full_reads.fetch_add(1, Ordering::Relaxed);
    } else {
        state.caught_up.fetch_add(read as u64, Ordering::Relaxed);
    }
    *position = Some(last);
    Ok(())
}

/// Applies one notification: `policy [N]`, `consent <id> <feed number>` or `consents <feed
/// number>` (many written at once: read the feed from `position`). Feed numbers follow the
/// commit order, so the position only moves forward.
async fn apply(
    payload: &str,
    store: &Arc<PgStore>,
    policy: &Arc<PolicyHandle>,
    consent: &Arc<Registry>,
    position: &mut Option<i64>,
) -> Result<(), StoreError> {
    let (s, p, c, payload, from) = (store.clone(), policy.clone(), consent.clone(), payload.to_owned(), *position);
    let moved = tokio::task::spawn_blocking(move || {
        let mut words = payload.split(' ');
        let number = |w: Option<&str>| w.and_then(|n| n.parse::<i64>().ok());
        match (words.next(), words.next(), words.next()) {
            (Some("policy"), _, _) => {
                p.refresh(s.as_ref()).map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok::<_, StoreError>(None)
            }
            (Some("consent"), Some(id), seq) => {
                c.refresh(id)?;
                Ok(number(seq))
            }
            (Some("consents"), seq, None) => {
                let (changed, last) = s.consent_feed_after(from.unwrap_or(0))?;
                c.index_all(&changed);
                Ok(Some(number(seq).unwrap_or(0).max(last)))
            }
            _ => {
                tracing::warn!("unknown store notification ignored");
                Ok(None)
            }
        }
    })
    .await
    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
    if let Some(n) = moved {
        *position = Some(position.map_or(n, |p| p.max(n)));
    }
    Ok(())
}
