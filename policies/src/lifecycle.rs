//! The lifecycles of instruments as explicit state machines (DOMAIN.md §2).
//!
//! A DIV convention (seed 000) goes `requested → deliberation-received → convention-sent →
//! signed-by-beneficiary → test-phase → active → published`; an active or published convention
//! can be `suspended` (with a reason) and resumed to the state it had; any convention can be
//! `terminated`. Other instruments have a status: `draft → test → active`, `active ↔ suspended`,
//! and the ends `expired` and `revoked`. Every other move is refused with the moves that are
//! possible from where the instrument stands.

use std::fmt;

use crate::model::{AdhesionState, ConventionState, Instrument, InstrumentKind, Status};

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// `to` names no state of this kind of instrument.
    UnknownState { to: String, known: &'static [&'static str] },
    /// The move is not in the lifecycle.
    NotAllowed { from: &'static str, to: &'static str, possible: Vec<&'static str> },
    /// Suspending needs a reason, shown to callers while suspended.
    ReasonRequired,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionError::UnknownState { to, known } => {
                write!(f, "'{to}' is not a state of this instrument; its states are: {}", known.join(", "))
            }
            TransitionError::NotAllowed { from, to, possible } if possible.is_empty() => {
                write!(f, "cannot go from {from} to {to}: {from} is final")
            }
            TransitionError::NotAllowed { from, to, possible } => {
                write!(f, "cannot go from {from} to {to}; from {from} the possible states are: {}", possible.join(", "))
            }
            TransitionError::ReasonRequired => f.write_str("a suspension needs a reason (shown to callers)"),
        }
    }
}

impl std::error::Error for TransitionError {}

/// Every convention state, in procedure order.
const CONVENTION_ORDER: [ConventionState; 9] = {
    use ConventionState::*;
    [
        Requested,
        DeliberationReceived,
        ConventionSent,
        SignedByBeneficiary,
        TestPhase,
        Active,
        Published,
        Suspended,
        Terminated,
    ]
};

const STATUS_ORDER: [Status; 6] = {
    use Status::*;
    [Draft, Test, Active, Suspended, Expired, Revoked]
};

/// Their names, for refusals, taken from `as_str` so they are written once.
const CONVENTION_STATES: &[&str] = &{
    let mut names = [""; CONVENTION_ORDER.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = CONVENTION_ORDER[i].as_str();
        i += 1;
    }
    names
};

const STATUSES: &[&str] = &{
    let mut names = [""; STATUS_ORDER.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = STATUS_ORDER[i].as_str();
        i += 1;
    }
    names
};

impl ConventionState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConventionState::Requested => "requested",
            ConventionState::DeliberationReceived => "deliberation-received",
            ConventionState::ConventionSent => "convention-sent",
            ConventionState::SignedByBeneficiary => "signed-by-beneficiary",
            ConventionState::TestPhase => "test-phase",
            ConventionState::Active => "active",
            ConventionState::Published => "published",
            ConventionState::Suspended => "suspended",
            ConventionState::Terminated => "terminated",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        CONVENTION_ORDER.into_iter().find(|c| c.as_str() == s)
    }

    /// The states a convention may move to from here.
    pub fn next(self) -> Vec<ConventionState> {
        use ConventionState::*;
        let mut v = match self {
            Requested => vec![DeliberationReceived],
            DeliberationReceived => vec![ConventionSent],
            ConventionSent => vec![SignedByBeneficiary],
            SignedByBeneficiary => vec![TestPhase],
            TestPhase => vec![Active],
            Active => vec![Published, Suspended],
            Published => vec![Suspended],
            Suspended => vec![Active],
            Terminated => vec![],
        };
        if self != Terminated {
            v.push(Terminated);
        }
        v
    }
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Test => "test",
            Status::Active => "active",
            Status::Suspended => "suspended",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        STATUS_ORDER.into_iter().find(|c| c.as_str() == s)
    }

    /// The statuses an instrument may move to from here.
    pub fn next(self) -> Vec<Status> {
        use Status::*;
        match self {
            Draft => vec![Test, Active, Revoked],
            Test => vec![Active, Revoked],
            Active => vec![Suspended, Expired, Revoked],
            Suspended => vec![Active, Revoked],
            Expired | Revoked => vec![],
        }
    }
}

/// The state (conventions) or status (others) the instrument is in, as text.
pub fn state_of(ins: &Instrument) -> &'static str {
    match (ins.kind, ins.state) {
        (InstrumentKind::Convention, Some(s)) => s.as_str(),
        _ => ins.status.unwrap_or(Status::Draft).as_str(),
    }
}

/// The states (a convention) or statuses (another instrument) `ins` may move to from where it
/// is, as [`state_of`] names them. Who may take each step is the procedure table's.
pub fn next_of(ins: &Instrument) -> Vec<&'static str> {
    match ins.kind {
        InstrumentKind::Convention => {
            ins.state.unwrap_or(ConventionState::Requested).next().iter().map(|s| s.as_str()).collect()
        }
        _ => ins.status.unwrap_or(Status::Draft).next().iter().map(|s| s.as_str()).collect(),
    }
}

impl AdhesionState {
    pub const fn as_str(self) -> &'static str {
        match self {
            AdhesionState::Requested => "requested",
            AdhesionState::Approved => "approved",
            AdhesionState::Onboarding => "onboarding",
            AdhesionState::Active => "active",
            AdhesionState::Refused => "refused",
            AdhesionState::Withdrawn => "withdrawn",
        }
    }
}

/// The steps an adhesion in `state` may take (seed 001): examined, then onboarded, then
/// confirmed. For a usage convention (`signed`, seed 003) there is no examination or
/// onboarding: the user's signature is the request, the data owner's countersignature makes it
/// active. Refused and withdrawn are final.
pub fn adhesion_next(state: AdhesionState, signed: bool) -> &'static [AdhesionState] {
    use AdhesionState::*;
    match state {
        Requested if signed => &[Active, Refused, Withdrawn],
        Approved | Onboarding if signed => &[Withdrawn],
        Requested => &[Approved, Refused, Withdrawn],
        Approved => &[Onboarding, Withdrawn],
        Onboarding => &[Active, Withdrawn],
        Active => &[Withdrawn],
        Refused | Withdrawn => &[],
    }
}

fn allowed(from: &'static str, to: &'static str, possible: Vec<&'static str>) -> Result<(), TransitionError> {
    if possible.contains(&to) { Ok(()) } else { Err(TransitionError::NotAllowed { from, to, possible }) }
}

/// Moves `ins` to `to`; returns a summary (`test-phase → active`). A suspension sets the
/// reason; lifting it clears the reason and, for a convention, returns to the state it had.
pub fn transition(ins: &mut Instrument, to: &str, reason: Option<&str>) -> Result<String, TransitionError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if ins.kind == InstrumentKind::Convention {
        let target = ConventionState::parse(to)
            .ok_or(TransitionError::UnknownState { to: to.to_owned(), known: CONVENTION_STATES })?;
        let from = ins.state.unwrap_or(ConventionState::Requested);
        allowed(from.as_str(), target.as_str(), from.next().iter().map(|s| s.as_str()).collect())?;
        let landed = match target {
            ConventionState::Suspended => {
                let r = reason.ok_or(TransitionError::ReasonRequired)?;
                ins.suspended_reason = Some(r.to_owned());
                ins.suspended_from = Some(from);
                target
            }
            ConventionState::Active if from == ConventionState::Suspended => {
                ins.suspended_reason = None;
                ins.suspended_from.take().unwrap_or(ConventionState::Active)
            }
            _ => {
                ins.suspended_reason = None;
                ins.suspended_from = None;
                target
            }
        };
        ins.state = Some(landed);
        Ok(format!("{} → {}", from.as_str(), landed.as_str()))
    } else {
        let target = Status::parse(to).ok_or(TransitionError::UnknownState { to: to.to_owned(), known: STATUSES })?;
        let from = ins.status.unwrap_or(Status::Draft);
        allowed(from.as_str(), target.as_str(), from.next().iter().map(|s| s.as_str()).collect())?;
        if target == Status::Suspended {
            ins.suspended_reason = Some(reason.ok_or(TransitionError::ReasonRequired)?.to_owned());
        } else {
            ins.suspended_reason = None;
        }
        ins.status = Some(target);
        Ok(format!("{} → {}", from.as_str(), target.as_str()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::Instrument;

    fn convention() -> Instrument {
        toml::from_str(
            r#"reference = "C"
kind = "convention"
title = "t"
state = "requested""#,
        )
        .unwrap()
    }

    #[test]
    fn the_div_procedure_in_order_then_suspension_and_resumption() {
        let mut c = convention();
        for to in
            ["deliberation-received", "convention-sent", "signed-by-beneficiary", "test-phase", "active", "published"]
        {
            transition(&mut c, to, None).unwrap();
            assert_eq!(state_of(&c), to);
        }
        assert_eq!(transition(&mut c, "suspended", None), Err(TransitionError::ReasonRequired));
        assert_eq!(transition(&mut c, "suspended", Some("  ")), Err(TransitionError::ReasonRequired));
        transition(&mut c, "suspended", Some("security incident at the beneficiary")).unwrap();
        assert_eq!(c.effective_status(), Status::Suspended);
        assert_eq!(c.suspended_reason.as_deref(), Some("security incident at the beneficiary"));
        // Lifting the suspension returns to where it was: published.
        assert_eq!(transition(&mut c, "active", None).unwrap(), "suspended → published");
        assert_eq!(c.suspended_reason, None);
        transition(&mut c, "terminated", None).unwrap();
        let e = transition(&mut c, "active", None).unwrap_err();
        assert_eq!(e.to_string(), "cannot go from terminated to active: terminated is final");
    }

    #[test]
    fn every_skip_is_refused_naming_the_possible_moves() {
        let mut c = convention();
        let e = transition(&mut c, "active", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot go from requested to active; from requested the possible states are: deliberation-received, terminated"
        );
        assert!(matches!(transition(&mut c, "signed", None), Err(TransitionError::UnknownState { .. })));
        // No state may be skipped: from each state only its successor (and the ends) is open.
        let order = CONVENTION_STATES;
        for (i, from) in order.iter().enumerate().take(6) {
            let mut c = convention();
            for to in &order[1..=i] {
                transition(&mut c, to, None).unwrap();
            }
            assert_eq!(state_of(&c), *from);
            for to in order.iter().skip(i + 2) {
                let allowed = (*from == "active" && *to == "suspended") || *to == "terminated";
                let mut d = c.clone();
                assert_eq!(transition(&mut d, to, Some("r")).is_ok(), allowed, "{from} → {to}");
            }
        }
    }

    #[test]
    fn statuses_of_other_instruments() {
        let mut d: Instrument = toml::from_str(
            r#"reference = "D"
kind = "deliberation"
title = "t"
status = "draft""#,
        )
        .unwrap();
        assert!(transition(&mut d, "suspended", Some("r")).is_err());
        transition(&mut d, "active", None).unwrap();
        transition(&mut d, "suspended", Some("datatransfer paused")).unwrap();
        assert_eq!(d.suspended_reason.as_deref(), Some("datatransfer paused"));
        transition(&mut d, "active", None).unwrap();
        assert_eq!(d.suspended_reason, None);
        transition(&mut d, "revoked", None).unwrap();
        assert!(transition(&mut d, "active", None).is_err());
        assert!(matches!(transition(&mut d, "published", None), Err(TransitionError::UnknownState { .. })));
    }
}
