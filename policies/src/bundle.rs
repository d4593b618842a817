//! Policy bundles: TOML files describing organisations, sources, services, instruments, roles
//! and exceptional accesses. Several files merge into one [`Policy`]; every problem found is
//! reported with the file and the key it is about, e.g.
//! `sigedis.toml: instruments[1] "CSI/SSH/19/004": protocol lacks element (9) sanctions`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use crate::ids::Kbo;
use crate::model::{Ceiling, Instrument, InstrumentKind, OrgKind, Policy, Recipient, Status};

/// One problem in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    pub file: String,
    /// The offending key, as a path (`instruments[2].grants[0].fields`).
    pub key: String,
    pub message: String,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// All problems found in a set of bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleErrors(pub Vec<BundleError>);

impl fmt::Display for BundleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BundleErrors {}

/// Reads and validates bundle files, merged in the order given.
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<Policy, BundleErrors> {
    let mut texts = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for p in paths {
        let p = p.as_ref();
        match std::fs::read_to_string(p) {
            Ok(t) => texts.push((p.display().to_string(), t)),
            Err(e) => {
                errors.push(BundleError { file: p.display().to_string(), key: String::new(), message: e.to_string() })
            }
        }
    }
    if !errors.is_empty() {
        return Err(BundleErrors(errors));
    }
    load_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
}

/// Parses and validates bundles given as (file name, text).
pub fn load_texts<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Policy, BundleErrors> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in files {
        match toml::from_str::<Policy>(text) {
            Ok(p) => parsed.push((name.to_owned(), p)),
            Err(e) => errors.push(BundleError {
                file: name.to_owned(),
                key: String::new(),
                message: e.to_string().trim_end().replace('\n', " | "),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(BundleErrors(errors));
    }
    let mut v = Validator::default();
    v.check(&parsed);
    if v.errors.is_empty() {
        let mut merged = Policy::default();
        for (_, p) in parsed {
            for o in p.organisations {
                if !merged.organisations.iter().any(|m| m.kbo == o.kbo) {
                    merged.organisations.push(o);
                }
            }
            merged.sources.extend(p.sources);
            merged.services.extend(p.services);
            merged.instruments.extend(p.instruments);
            merged.roles.extend(p.roles);
            merged.exceptional_access.extend(p.exceptional_access);
            merged.dam_sheets.extend(p.dam_sheets);
            merged.zones.extend(p.zones);
        }
        Ok(merged)
    } else {
        Err(BundleErrors(v.errors))
    }
}

/// Validates a whole policy (as held by the control plane), as if it were one bundle `name`.
pub fn validate(name: &str, policy: &Policy) -> Result<(), BundleErrors> {
    let mut v = Validator::default();
    v.check(&[(name.to_owned(), policy.clone())]);
    if v.errors.is_empty() { Ok(()) } else { Err(BundleErrors(v.errors)) }
}

#[derive(Default)]
struct Validator {
    errors: Vec<BundleError>,
}

impl Validator {
    fn err(&mut self, file: &str, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(BundleError { file: file.to_owned(), key: key.into(), message: message.into() });
    }

    /// A date is a plain date by construction (`model::Date` reads nothing else); a window must
    /// not end before it starts.
    fn window(&mut self, file: &str, key: &str, from: Option<&crate::model::Date>, until: Option<&crate::model::Date>) {
        if let (Some(f), Some(u)) = (from, until)
            && f > u
        {
            self.err(file, format!("{key}.valid_until"), "is before valid_from");
        }
    }

    fn check(&mut self, files: &[(String, Policy)]) {
        // Global tables first: everything may be referenced from any file.
        let mut orgs: HashMap<Kbo, (OrgKind, &str)> = HashMap::new();
        let mut services: HashMap<&str, &[String]> = HashMap::new();
        let mut sources: HashSet<&str> = HashSet::new();
        let mut instruments: HashMap<&str, InstrumentKind> = HashMap::new();
        let mut grant_ids: HashSet<&str> = HashSet::new();
        for (file, p) in files {
            for (i, o) in p.organisations.iter().enumerate() {
                let key = format!("organisations[{i}]");
                if o.name.trim().is_empty() {
                    self.err(file, format!("{key}.name"), "is empty");
                }
                match orgs.get(&o.kbo) {
                    Some((kind, name)) if *kind != o.kind || *name != o.name => {
                        self.err(file, key, format!("enterprise number {} is declared twice, differently", o.kbo));
                    }
                    _ => {
                        orgs.insert(o.kbo, (o.kind, o.name.as_str()));
                    }
                }
            }
            for (i, s) in p.sources.iter().enumerate() {
                for (what, value) in [("id", &s.id), ("name", &s.name)] {
                    if value.trim().is_empty() {
                        self.err(file, format!("sources[{i}].{what}"), "is empty");
                    }
                }
                if !sources.insert(s.id.as_str()) {
                    self.err(file, format!("sources[{i}].id"), format!("source '{}' is declared twice", s.id));
                }
            }
            for (i, s) in p.services.iter().enumerate() {
                if services.insert(s.id.as_str(), &s.fields).is_some() {
                    self.err(file, format!("services[{i}].id"), format!("service '{}' is declared twice", s.id));
                }
            }
            for (i, ins) in p.instruments.iter().enumerate() {
                if ins.reference.trim().is_empty() {
                    self.err(file, format!("instruments[{i}].reference"), "is empty");
                } else if instruments.insert(ins.reference.as_str(), ins.kind).is_some() {
                    self.err(
                        file,
                        format!("instruments[{i}].reference"),
                        format!("instrument '{}' is declared twice", ins.reference),
                    );
                }
            }
        }

        for (file, p) in files {
            let file = file.as_str();
            for (i, s) in p.sources.iter().enumerate() {
                if !orgs.contains_key(&s.owner) {
                    self.err(file, format!("sources[{i}].owner"), format!("unknown organisation {}", s.owner));
                }
            }
            for (i, s) in p.services.iter().enumerate() {
                let key = format!("services[{i}]");
                if !sources.contains(s.source.as_str()) {
                    self.err(file, format!("{key}.source"), format!("unknown source '{}'", s.source));
                }
                if !s.id.starts_with(&format!("{}.", s.source)) {
                    self.err(file, format!("{key}.id"), format!("must start with '{}.'", s.source));
                }
                if s.fields.is_empty() || s.fields.len() > 64 {
                    self.err(file, format!("{key}.fields"), "must list 1 to 64 fields");
                }
                let mut seen = HashSet::new();
                for f in &s.fields {
                    if !seen.insert(f) {
                        self.err(file, format!("{key}.fields"), format!("field '{f}' is listed twice"));
                    }
                }
            }
            for (i, ins) in p.instruments.iter().enumerate() {
                let key = format!("instruments[{i}] \"{}\"", ins.reference);
                self.instrument(file, &key, ins, &orgs, &services, &instruments, &mut grant_ids);
                if let Some(src) = &ins.source {
                    if !sources.contains(src.as_str()) {
                        self.err(file, format!("{key}.source"), format!("unknown source '{src}'"));
                    }
                    for (j, g) in ins.grants.iter().enumerate() {
                        if !g.service.starts_with(&format!("{src}.")) {
                            self.err(
                                file,
                                format!("{key}.grants[{j}].service"),
                                format!("service '{}' is not a service of the instrument's source '{src}'", g.service),
                            );
                        }
                    }
                }
            }
            for (i, r) in p.roles.iter().enumerate() {
                let key = format!("roles[{i}]");
                if !orgs.contains_key(&r.org) {
                    self.err(file, format!("{key}.org"), format!("unknown organisation {}", r.org));
                }
                if r.end_user.trim().is_empty() || r.role.trim().is_empty() {
                    self.err(file, &key, "end_user and role must not be empty");
                }
                self.window(file, &key, Some(&r.valid_from), Some(&r.valid_until));
            }
            for (i, x) in p.exceptional_access.iter().enumerate() {
                let key = format!("exceptional_access[{i}]");
                match instruments.get(x.instrument.as_str()) {
                    Some(InstrumentKind::AccessMatrix) => {}
                    Some(_) => self.err(file, format!("{key}.instrument"), "must name an access-matrix instrument"),
                    None => {
                        self.err(file, format!("{key}.instrument"), format!("unknown instrument '{}'", x.instrument))
                    }
                }
                if !orgs.contains_key(&x.org) {
                    self.err(file, format!("{key}.org"), format!("unknown organisation {}", x.org));
                }
                if !grant_ids.insert(x.id.as_str()) {
                    self.err(file, format!("{key}.id"), format!("id '{}' is used twice", x.id));
                }
                self.service_fields(file, &key, &x.service, &x.fields, &services);
                if x.purposes.is_empty() {
                    self.err(file, format!("{key}.purposes"), "must name at least one purpose");
                }
            }
        }
        self.authority(files);
        self.procedures(files);
    }

    fn document(&mut self, file: &str, key: &str, d: &crate::model::Document) {
        if d.title.trim().is_empty() {
            self.err(file, format!("{key}.documents"), "a document has a title");
        }
        match &d.sha256 {
            Some(h) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                self.err(file, format!("{key}.documents"), format!("sha256 of '{}' is not 64 hex digits", d.title))
            }
            None if d.reference.as_deref().is_none_or(|r| r.trim().is_empty()) => self.err(
                file,
                format!("{key}.documents"),
                format!("document '{}' needs a reference or its sha256", d.title),
            ),
            _ => {}
        }
    }

    /// Zones, DAM sheets, role validity limits, and the other parts added with the seeds'
    /// procedures.
    fn procedures(&mut self, files: &[(String, Policy)]) {
        let all_orgs: HashMap<Kbo, OrgKind> =
            files.iter().flat_map(|(_, p)| p.organisations.iter().map(|o| (o.kbo, o.kind))).collect();
        let instruments: HashMap<&str, &Instrument> =
            files.iter().flat_map(|(_, p)| p.instruments.iter().map(|i| (i.reference.as_str(), i))).collect();
        let services: HashMap<&str, &[String]> =
            files.iter().flat_map(|(_, p)| p.services.iter().map(|s| (s.id.as_str(), s.fields.as_slice()))).collect();
        let service_source: HashMap<&str, &str> =
            files.iter().flat_map(|(_, p)| p.services.iter().map(|s| (s.id.as_str(), s.source.as_str()))).collect();
        let ceilings: HashMap<&str, &Ceiling> = files
            .iter()
            .flat_map(|(_, p)| p.sources.iter().filter_map(|s| s.ceiling.as_ref().map(|c| (s.id.as_str(), c))))
            .collect();
        let mut zone_names = HashSet::new();
        for (file, p) in files {
            for (i, z) in p.zones.iter().enumerate() {
                let key = format!("zones[{i}]");
                if z.name.trim().is_empty() || !zone_names.insert(z.name.as_str()) {
                    self.err(file, format!("{key}.name"), format!("zone name '{}' is empty or taken", z.name));
                }
                if z.networks.is_empty() {
                    self.err(file, format!("{key}.networks"), "a zone holds at least one network");
                }
                for n in &z.networks {
                    if let Err(m) = crate::conditions::Net::parse(n) {
                        self.err(file, format!("{key}.networks"), m);
                    }
                }
            }
        }
        // The longest validity of a role: the least any instrument requiring it allows.
        let mut limits: HashMap<&str, (u32, &str)> = HashMap::new();
        for ins in instruments.values() {
            let Some(days) = ins.role_validity_days else { continue };
            for g in &ins.grants {
                if let Some(r) = g.end_user_role.as_deref() {
                    let e = limits.entry(r).or_insert((days, ins.reference.as_str()));
                    if days < e.0 {
                        *e = (days, ins.reference.as_str());
                    }
                }
            }
        }
        for (file, p) in files {
            let file = file.as_str();
            for (i, o) in p.organisations.iter().enumerate() {
                if let Some(v) = &o.vcode
                    && crate::ids::VCode::parse(v).is_err()
                {
                    self.err(file, format!("organisations[{i}].vcode"), format!("'{v}' is not a vCode"));
                }
            }
            for (i, s) in p.sources.iter().enumerate() {
                if let Some(k) = s.ict_office
                    && !all_orgs.contains_key(&k)
                {
                    self.err(file, format!("sources[{i}].ict_office"), format!("unknown organisation {k}"));
                }
                if s.revalidation.is_some_and(|r| r.days == 0) {
                    self.err(file, format!("sources[{i}].revalidation.days"), "must be at least 1 day");
                }
            }
            for (i, ins) in p.instruments.iter().enumerate() {
                for (j, g) in ins.grants.iter().enumerate() {
                    for z in g.origin.iter().flat_map(|o| &o.zones) {
                        if !zone_names.contains(z.as_str()) {
                            self.err(
                                file,
                                format!("instruments[{i}] \"{}\".grants[{j}].where.zones", ins.reference),
                                format!("no zone '{z}' is declared (the integrator names zones)"),
                            );
                        }
                    }
                }
            }
            for (i, r) in p.roles.iter().enumerate() {
                let Some((days, by)) = limits.get(r.role.as_str()) else { continue };
                let length = r.valid_until.days() - r.valid_from.days() + 1;
                if r.withdrawn.is_none() && length > i64::from(*days) {
                    self.err(
                        file,
                        format!("roles[{i}].valid_until"),
                        format!(
                            "the role '{}' is valid {length} days; '{by}' allows at most {days}: renew it instead",
                            r.role
                        ),
                    );
                }
            }
            for (i, d) in p.dam_sheets.iter().enumerate() {
                let key = format!("dam_sheets[{i}]");
                let matrix = instruments.get(d.instrument.as_str());
                match matrix {
                    Some(m) if m.kind == InstrumentKind::AccessMatrix => {}
                    Some(_) => self.err(file, format!("{key}.instrument"), "must name an access-matrix instrument"),
                    None => {
                        self.err(file, format!("{key}.instrument"), format!("unknown instrument '{}'", d.instrument))
                    }
                }
                if !all_orgs.contains_key(&d.org) {
                    self.err(file, format!("{key}.org"), format!("unknown organisation {}", d.org));
                }
                if !crate::model::DAM_ROLES.contains(&d.end_user_role.as_str()) {
                    self.err(
                        file,
                        format!("{key}.end_user_role"),
                        format!("a DAM sheet opens access to {} only", crate::model::DAM_ROLES.join(", ")),
                    );
                }
                for (what, text) in [("objectives", &d.objectives), ("methodology", &d.methodology)] {
                    if text.trim().is_empty() {
                        self.err(file, format!("{key}.{what}"), "the DAM sheet states it");
                    }
                }
                if d.purposes.is_empty() {
                    self.err(file, format!("{key}.purposes"), "must name at least one purpose");
                }
                if d.access.is_empty() {
                    self.err(file, format!("{key}.access"), "names at least one service");
                }
                for (j, a) in d.access.iter().enumerate() {
                    let akey = format!("{key}.access[{j}]");
                    self.service_fields(file, &akey, &a.service, &a.fields, &services);
                    let source = service_source.get(a.service.as_str()).copied().unwrap_or_default();
                    if let Some(m) = matrix
                        && !m.sources().contains(&source)
                    {
                        self.err(
                            file,
                            format!("{akey}.service"),
                            format!("'{}' is not a service of the sources of '{}'", a.service, d.instrument),
                        );
                    }
                    if let Some(c) = ceilings.get(source) {
                        let kinds: Vec<OrgKind> = all_orgs.get(&d.org).copied().into_iter().collect();
                        self.ceiling(file, &akey, (source, c), &kinds, &d.purposes, &a.fields, c.consent);
                    }
                }
            }
        }
    }

    /// The rules that bind instruments to one another and to their sources: parents form no
    /// cycle, a deliberation replaces only protocols, an exceptional access stays within its
    /// matrix's sources, and nothing goes beyond a source's statutory ceiling.
    fn authority(&mut self, files: &[(String, Policy)]) {
        let all_orgs: HashMap<Kbo, OrgKind> =
            files.iter().flat_map(|(_, p)| p.organisations.iter().map(|o| (o.kbo, o.kind))).collect();
        let instruments: HashMap<&str, &Instrument> =
            files.iter().flat_map(|(_, p)| p.instruments.iter().map(|i| (i.reference.as_str(), i))).collect();
        let ceilings: HashMap<&str, &Ceiling> = files
            .iter()
            .flat_map(|(_, p)| p.sources.iter().filter_map(|s| s.ceiling.as_ref().map(|c| (s.id.as_str(), c))))
            .collect();
        let service_source: HashMap<&str, &str> =
            files.iter().flat_map(|(_, p)| p.services.iter().map(|s| (s.id.as_str(), s.source.as_str()))).collect();
        for (file, p) in files {
            let file = file.as_str();
            for (i, s) in p.sources.iter().enumerate() {
                let key = format!("sources[{i}]");
                if s.audit_retention_days == Some(0) {
                    self.err(file, format!("{key}.audit_retention_days"), "must be at least 1 day");
                }
                if let Some(po) = s.privacy_office
                    && !all_orgs.contains_key(&po)
                {
                    self.err(file, format!("{key}.privacy_office"), format!("unknown organisation {po}"));
                }
                if let Some(c) = &s.ceiling {
                    if c.basis.trim().is_empty() {
                        self.err(file, format!("{key}.ceiling.basis"), "a ceiling names the legal text that sets it");
                    }
                    let fields: HashSet<&str> = files
                        .iter()
                        .flat_map(|(_, p)| p.services.iter().filter(|x| x.source == s.id))
                        .flat_map(|x| x.fields.iter().map(String::as_str))
                        .collect();
                    for f in &c.fields {
                        if !fields.contains(f.as_str()) {
                            self.err(
                                file,
                                format!("{key}.ceiling.fields"),
                                format!("no service of '{}' has a field '{f}'", s.id),
                            );
                        }
                    }
                }
            }
            for (i, ins) in p.instruments.iter().enumerate() {
                let key = format!("instruments[{i}] \"{}\"", ins.reference);
                // The chain of parents ends.
                let mut seen = vec![ins.reference.as_str()];
                let mut next = ins.parent.as_deref();
                while let Some(parent) = next {
                    if seen.contains(&parent) {
                        self.err(
                            file,
                            format!("{key}.parent"),
                            format!("the chain of parents loops through '{parent}'"),
                        );
                        break;
                    }
                    if seen.len() > crate::compiled::MAX_DEPTH {
                        self.err(file, format!("{key}.parent"), "the chain of parents is deeper than 16");
                        break;
                    }
                    seen.push(parent);
                    next = instruments.get(parent).and_then(|p| p.parent.as_deref());
                }
                for (j, r) in ins.replaces.iter().enumerate() {
                    match instruments.get(r.as_str()) {
                        Some(old) if old.is_protocol() => {}
                        Some(_) => self.err(file, format!("{key}.replaces[{j}]"), format!("'{r}' is not a protocol")),
                        None => self.err(file, format!("{key}.replaces[{j}]"), format!("unknown instrument '{r}'")),
                    }
                }
                for (j, g) in ins.grants.iter().enumerate() {
                    let Some(c) =
                        service_source.get(g.service.as_str()).and_then(|s| ceilings.get(s).map(|c| (*s, *c)))
                    else {
                        continue;
                    };
                    let kinds: Vec<OrgKind> = match &g.recipient {
                        Recipient::Org(k) => all_orgs.get(k).copied().into_iter().collect(),
                        Recipient::Kind(k) => vec![*k],
                        Recipient::Adherents(_) => ins.eligible.clone(),
                    };
                    let gkey = format!("{key}.grants[{j}]");
                    self.ceiling(file, &gkey, c, &kinds, &g.purposes, &g.fields, g.consent);
                }
            }
            for (i, x) in p.exceptional_access.iter().enumerate() {
                let key = format!("exceptional_access[{i}]");
                if let Some(matrix) = instruments.get(x.instrument.as_str()) {
                    let sources = matrix.sources();
                    let source = service_source.get(x.service.as_str()).copied().unwrap_or_default();
                    if !sources.contains(&source) {
                        self.err(
                            file,
                            format!("{key}.service"),
                            format!(
                                "'{}' is not a service of the sources of '{}' ({}); an exceptional access stays within its matrix",
                                x.service,
                                x.instrument,
                                sources.join(", ")
                            ),
                        );
                    }
                }
                if let Some(c) = service_source.get(x.service.as_str()).and_then(|s| ceilings.get(s).map(|c| (*s, *c)))
                {
                    let kinds: Vec<OrgKind> = all_orgs.get(&x.org).copied().into_iter().collect();
                    // Consent follows the ceiling for exceptional accesses: they carry no flag.
                    self.ceiling(file, &key, c, &kinds, &x.purposes, &x.fields, c.1.consent);
                }
            }
        }
    }

    /// Refuses what goes beyond `source`'s ceiling, naming the ceiling and its legal basis.
    #[allow(clippy::too_many_arguments)]
    fn ceiling(
        &mut self,
        file: &str,
        key: &str,
        (source, c): (&str, &Ceiling),
        recipients: &[OrgKind],
        purposes: &[String],
        fields: &[String],
        consent: bool,
    ) {
        let limit = |what: String| format!("exceeds the statutory ceiling of source '{source}' ({}): {what}", c.basis);
        if !c.recipients.is_empty() {
            for k in recipients {
                if !c.recipients.contains(k) {
                    let msg =
                        format!("a {} may not receive; recipients are limited to {}", k.as_str(), kinds(&c.recipients));
                    self.err(file, format!("{key}.recipient"), limit(msg));
                }
            }
        }
        if !c.purposes.is_empty() {
            for p in purposes {
                if !c.purposes.contains(p) {
                    let msg =
                        format!("purpose '{p}' is not allowed; purposes are limited to {}", c.purposes.join(", "));
                    self.err(file, format!("{key}.purposes"), limit(msg));
                }
            }
        }
        if !c.fields.is_empty() {
            for f in fields {
                if !c.fields.contains(f) {
                    self.err(file, format!("{key}.fields"), limit(format!("field '{f}' may not leave")));
                }
            }
        }
        if c.consent && !consent {
            self.err(file, format!("{key}.consent"), limit("every access needs the data subject's consent".to_owned()));
        }
    }

    fn service_fields(
        &mut self,
        file: &str,
        key: &str,
        service: &str,
        fields: &[String],
        services: &HashMap<&str, &[String]>,
    ) {
        let Some(known) = services.get(service) else {
            self.err(file, format!("{key}.service"), format!("unknown service '{service}'"));
            return;
        };
        if fields.is_empty() {
            self.err(file, format!("{key}.fields"), "must grant at least one field");
        }
        for f in fields {
            if !known.contains(f) {
                self.err(file, format!("{key}.fields"), format!("service '{service}' has no field '{f}'"));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn instrument<'p>(
        &mut self,
        file: &str,
        key: &str,
        ins: &'p crate::model::Instrument,
        orgs: &HashMap<Kbo, (OrgKind, &str)>,
        services: &HashMap<&str, &[String]>,
        instruments: &HashMap<&str, InstrumentKind>,
        grant_ids: &mut HashSet<&'p str>,
    ) {
        let needs = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        match ins.kind {
            InstrumentKind::Deliberation | InstrumentKind::General => {
                for (name, missing) in [("authority", needs(&ins.authority)), ("number", needs(&ins.number))] {
                    if missing {
                        self.err(file, format!("{key}.{name}"), "is required for a deliberation or general instrument");
                    }
                }
                if ins.date.is_none() {
                    self.err(file, format!("{key}.date"), "is required for a deliberation or general instrument");
                }
            }
            InstrumentKind::Protocol if ins.protocol.is_none() => {
                self.err(file, format!("{key}.protocol"), "a protocol must state the 13 elements of art. 8")
            }
            InstrumentKind::Protocol => {}
            InstrumentKind::Convention => {
                if ins.state.is_none() {
                    self.err(file, format!("{key}.state"), "a convention needs its lifecycle state");
                }
                if ins.status.is_some() {
                    self.err(file, format!("{key}.status"), "a convention's status follows its state; remove it");
                }
                if ins.parent.is_none() {
                    self.err(file, format!("{key}.parent"), "a convention rests on a deliberation: name it");
                }
            }
            InstrumentKind::Statutory => {
                for (name, missing) in [("law", needs(&ins.law)), ("article", needs(&ins.article))] {
                    if missing {
                        self.err(file, format!("{key}.{name}"), "is required for a statutory basis");
                    }
                }
            }
            InstrumentKind::AccessMatrix => {}
        }
        // Every protocol, general or not, states the 13 elements and carries the DPO's advice.
        if let Some(p) = &ins.protocol {
            if !ins.is_protocol() {
                self.err(file, format!("{key}.protocol"), "only protocols and general protocols state art. 8 elements");
            }
            for (n, name, value) in p.elements() {
                if value.is_none_or(|s| s.trim().is_empty()) {
                    self.err(file, format!("{key}.protocol.{name}"), format!("protocol lacks element ({n}) {name}"));
                }
            }
        }
        // A protocol may be drafted before its DPO advice, never put in force without it.
        if ins.is_protocol() && needs(&ins.dpo_advice) && ins.effective_status() != Status::Draft {
            self.err(file, format!("{key}.dpo_advice"), "a protocol carries the advice of the data protection officer");
        }
        if ins.role_validity_days == Some(0) {
            self.err(file, format!("{key}.role_validity_days"), "must be at least 1 day");
        }
        if !ins.replaces.is_empty() && !matches!(ins.kind, InstrumentKind::Deliberation | InstrumentKind::General) {
            self.err(file, format!("{key}.replaces"), "only a deliberation replaces protocols");
        }
        if !ins.replaces.is_empty() && ins.is_protocol() {
            self.err(file, format!("{key}.replaces"), "a protocol cannot replace another; a deliberation does");
        }
        if ins.kind != InstrumentKind::Convention && ins.status.is_none() {
            self.err(file, format!("{key}.status"), "is required");
        }
        if ins.effective_status() == Status::Suspended && needs(&ins.suspended_reason) {
            self.err(file, format!("{key}.suspended_reason"), "a suspended instrument must say why");
        }
        if ins.kind == InstrumentKind::General && ins.eligible.is_empty() {
            self.err(file, format!("{key}.eligible"), "a general instrument names the kinds that may adhere");
        }
        if let Some(parent) = &ins.parent
            && !instruments.contains_key(parent.as_str())
        {
            self.err(file, format!("{key}.parent"), format!("unknown instrument '{parent}'"));
        }
        self.window(file, key, ins.valid_from.as_ref(), ins.valid_until.as_ref());
        for (j, a) in ins.adhesions.iter().enumerate() {
            let akey = format!("{key}.adhesions[{j}]");
            if !ins.takes_adhesions() {
                self.err(file, &akey, "only general instruments and access matrices open to some kinds take adhesions");
                continue;
            }
            match orgs.get(&a.org) {
                None => self.err(file, format!("{akey}.org"), format!("unknown organisation {}", a.org)),
                Some((kind, _)) if !ins.eligible.contains(kind) => self.err(
                    file,
                    format!("{akey}.org"),
                    format!("a {} cannot adhere: the instrument is open to {}", kind.as_str(), kinds(&ins.eligible)),
                ),
                Some(_) => {}
            }
            if !a.modalities_confirmed {
                self.err(file, format!("{akey}.modalities_confirmed"), "the adherent must confirm the modalities");
            }
            if a.requested_by.trim().is_empty() {
                self.err(file, format!("{akey}.requested_by"), "names the person who asks");
            }
            // A general protocol's adherent brings its DPO's advice; an adhesion to a CSI
            // authorization brings the evaluation form (seed 001).
            if ins.is_protocol() && needs(&a.dpo_advice) {
                self.err(
                    file,
                    format!("{akey}.dpo_advice"),
                    "an adhesion to a general protocol carries the DPO's advice",
                );
            }
            if !ins.is_protocol() && !ins.signed_matrix() && needs(&a.dpo_advice) && a.evaluation_form.is_none() {
                self.err(file, format!("{akey}.evaluation_form"), "an adhesion request carries the evaluation form");
            }
            for d in a.evaluation_form.iter().chain(&a.mandate) {
                self.document(file, &akey, d);
            }
        }
        for (j, g) in ins.grants.iter().enumerate() {
            let gkey = format!("{key}.grants[{j}]");
            if !grant_ids.insert(g.id.as_str()) {
                self.err(file, format!("{gkey}.id"), format!("grant id '{}' is used twice", g.id));
            }
            match &g.recipient {
                Recipient::Org(k) if !orgs.contains_key(k) => {
                    self.err(file, format!("{gkey}.recipient"), format!("unknown organisation {k}"));
                }
                Recipient::Adherents(false) => self.err(file, format!("{gkey}.recipient"), "adherents must be true"),
                Recipient::Adherents(true) if !ins.takes_adhesions() => {
                    self.err(
                        file,
                        format!("{gkey}.recipient"),
                        "only a general instrument or an access matrix open to some kinds has adherents",
                    );
                }
                _ => {}
            }
            self.service_fields(file, &gkey, &g.service, &g.fields, services);
            if g.purposes.is_empty() || g.purposes.iter().any(|p| p.trim().is_empty()) {
                self.err(file, format!("{gkey}.purposes"), "must name at least one non-empty purpose");
            }
            if g.environments.is_empty() {
                self.err(file, format!("{gkey}.environments"), "must open test, production or both");
            }
            if g.rate.is_some_and(|r| r.max == 0) {
                self.err(file, format!("{gkey}.rate.max"), "must be at least 1");
            }
            if let Some(o) = &g.origin {
                if o.certificates.is_empty() && o.zones.is_empty() {
                    self.err(file, format!("{gkey}.where"), "names certificates, zones or both");
                }
                for c in &o.certificates {
                    if crate::conditions::fingerprint(c).is_none() {
                        self.err(
                            file,
                            format!("{gkey}.where.certificates"),
                            format!("'{c}' is not a SHA-256 fingerprint (64 hex digits)"),
                        );
                    }
                }
            }
            if g.when.len() > crate::conditions::MAX_WINDOWS {
                self.err(
                    file,
                    format!("{gkey}.when"),
                    format!("at most {} windows per grant", crate::conditions::MAX_WINDOWS),
                );
            }
            for (k, w) in g.when.iter().enumerate() {
                if let Err(m) = crate::conditions::Span::parse(w) {
                    self.err(file, format!("{gkey}.when[{k}]"), m);
                }
            }
            self.window(file, &gkey, g.valid_from.as_ref(), g.valid_until.as_ref());
        }
    }
}

fn kinds(k: &[OrgKind]) -> String {
    k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}
