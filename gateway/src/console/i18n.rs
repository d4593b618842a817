//! The console's words, from one catalogue: English, French and Dutch. A key without a
//! translation in the caller's language falls back to English, so a page is never missing a
//! label while the catalogue is being completed.

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Fr,
    Nl,
}

impl Lang {
    /// The first of the caller's `Accept-Language` that the console speaks; English otherwise.
    pub fn from_accept(header: Option<&str>) -> Lang {
        let Some(h) = header else { return Lang::En };
        for tag in h.split(',') {
            let primary = tag.split(';').next().unwrap_or("").trim().split('-').next().unwrap_or("");
            match primary.to_ascii_lowercase().as_str() {
                "en" => return Lang::En,
                "fr" => return Lang::Fr,
                "nl" => return Lang::Nl,
                _ => {}
            }
        }
        Lang::En
    }

    pub const fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
            Lang::Nl => "nl",
        }
    }

    /// The text of `key` in this language (English when not translated yet, the key itself
    /// when the catalogue lacks it — a test checks that every key the pages name is there).
    pub fn t(self, key: &'static str) -> &'static str {
        let Some(row) = CATALOGUE.iter().find(|r| r.0 == key) else { return key };
        match self {
            Lang::En => row.1,
            Lang::Fr => row.2.unwrap_or(row.1),
            Lang::Nl => row.3.unwrap_or(row.1),
        }
    }
}

/// Key, English, French, Dutch.
type Row = (&'static str, &'static str, Option<&'static str>, Option<&'static str>);

pub const CATALOGUE: &[Row] = &[
    ("console", "Passerelle console", Some("Console Passerelle"), Some("Passerelle-console")),
    ("home", "Home", Some("Accueil"), Some("Start")),
    ("sources", "My sources and services", Some("Mes sources et services"), Some("Mijn bronnen en diensten")),
    ("instruments", "Instruments", Some("Instruments"), Some("Instrumenten")),
    ("exceptional", "Exceptional accesses", Some("Accès exceptionnels"), Some("Uitzonderlijke toegangen")),
    ("audit_requests", "Audit requests", Some("Demandes de contrôle"), Some("Controleverzoeken")),
    (
        "organisations",
        "Organisations and certificates",
        Some("Organisations et certificats"),
        Some("Organisaties en certificaten"),
    ),
    ("signed_in_as", "Signed in as", Some("Connecté en tant que"), Some("Aangemeld als")),
    ("not_registered", "This certificate's organisation is not registered with the gateway.", None, None),
    ("forbidden", "Not for this organisation", Some("Pas pour cette organisation"), Some("Niet voor deze organisatie")),
    ("forbidden_text", "The role table does not give this organisation what this page shows.", None, None),
    ("sources_forbidden", "Only the data owner of a source, or the integrator, sees this page.", None, None),
    ("certificate", "Certificate", Some("Certificat"), Some("Certificaat")),
    ("days_left", "days left", Some("jours restants"), Some("dagen over")),
    ("expires", "expires", Some("expire"), Some("vervalt")),
    ("source", "Source", Some("Source"), Some("Bron")),
    ("owner", "Data owner", Some("Propriétaire des données"), Some("Gegevenseigenaar")),
    (
        "privacy_office",
        "Privacy office",
        Some("Délégué à la protection des données"),
        Some("Functionaris voor gegevensbescherming"),
    ),
    ("services", "Services", Some("Services"), Some("Diensten")),
    ("service", "Service", Some("Service"), Some("Dienst")),
    ("fields", "Fields", Some("Champs"), Some("Velden")),
    ("exposure", "Exposed at", None, None),
    ("description", "Description", Some("Description"), Some("Beschrijving")),
    ("layout", "Layout", Some("Format"), Some("Formaat")),
    ("reference", "Reference", Some("Référence"), Some("Referentie")),
    ("kind", "Kind", Some("Type"), Some("Soort")),
    ("title", "Title", Some("Titre"), Some("Titel")),
    ("state", "State", Some("État"), Some("Toestand")),
    ("in_force", "In force", Some("En vigueur"), Some("Van kracht")),
    ("parent", "Parent instrument", None, None),
    ("access_matrix", "Access matrix", Some("Matrice d'accès"), Some("Toegangsmatrix")),
    ("recipient", "Who", Some("Qui"), Some("Wie")),
    ("what", "What", Some("Quoi"), Some("Wat")),
    ("purpose", "Purpose", Some("Finalité"), Some("Doel")),
    ("until", "Until", Some("Jusqu'au"), Some("Tot")),
    ("actions", "Lifecycle actions", None, None),
    ("no_actions", "No step leads on from this state.", None, None),
    ("move_to", "Move to", Some("Passer à"), Some("Overgaan naar")),
    ("reason", "Reason", Some("Motif"), Some("Reden")),
    ("gain", "Recipients who gain access", None, None),
    ("lose", "Recipients who lose access", None, None),
    ("no_change", "Who may call does not change.", None, None),
    ("evidence", "Evidence this step may need", None, None),
    ("document_title", "Document title", None, None),
    ("document_reference", "Document reference", None, None),
    ("text_version", "Convention text version", None, None),
    ("layout_version", "Layout version", None, None),
    ("signatory_name", "Signatory's name", None, None),
    ("signatory_capacity", "Signatory's capacity", None, None),
    ("contact_name", "Contact name", None, None),
    ("contact_email", "Contact e-mail", None, None),
    ("contact_phone", "Contact phone", None, None),
    ("requester", "Requester", Some("Demandeur"), Some("Aanvrager")),
    ("end_user", "End user", None, None),
    ("approval", "Approval", None, None),
    ("countdown", "Tacit approval", None, None),
    ("days_to_approval", "days until tacit approval", None, None),
    ("give_advice", "Give the advice", Some("Rendre l'avis"), Some("Advies geven")),
    ("favourable", "Favourable", Some("Favorable"), Some("Gunstig")),
    ("unfavourable", "Unfavourable", Some("Défavorable"), Some("Ongunstig")),
    ("advice_reference", "Advice reference", None, None),
    ("remark", "Make a remark (refuses the access)", None, None),
    ("withdraw", "Withdraw", Some("Retirer"), Some("Intrekken")),
    ("about", "About", None, None),
    ("period", "Period", Some("Période"), Some("Periode")),
    ("justification", "Justification", None, None),
    ("advice", "Advice", Some("Avis"), Some("Advies")),
    ("download_results", "Download the result (JSON; reading it is recorded in the trail)", None, None),
    ("none", "None.", Some("Aucun."), Some("Geen.")),
    ("failed", "The change was refused", Some("La modification a été refusée"), Some("De wijziging werd geweigerd")),
    ("back", "Back", Some("Retour"), Some("Terug")),
    ("submit", "Submit", Some("Envoyer"), Some("Versturen")),
    ("name", "Name", Some("Nom"), Some("Naam")),
    ("enterprise_number", "Enterprise number", Some("Numéro d'entreprise"), Some("Ondernemingsnummer")),
    ("policy_version", "Policy version", None, None),
    ("changes", "Changes", Some("Modifications"), Some("Wijzigingen")),
    ("not_found", "Nothing here", Some("Rien ici"), Some("Niets hier")),
    ("adhesions", "Adhesions", Some("Adhésions"), Some("Toetredingen")),
    ("requested_by", "Requested by", None, None),
    ("filed_on", "Filed on", None, None),
    ("register_xsd", "Register a service from its XSD", None, None),
    ("service_id", "Service identifier", None, None),
    ("upstream_path", "Path at the source", None, None),
    ("request_element", "Request element", None, None),
    ("response_element", "Answer element", None, None),
    ("subject_kind", "What X-Subject holds", None, None),
    ("xsd", "XSD of the payloads", None, None),
    ("catalogue", "Catalogue", Some("Catalogue"), Some("Catalogus")),
    (
        "catalogue_hint",
        "One entry a line: “field: Element/Path” for a grantable field, “Element/Path” for what is always kept, “[person]” or “[organisation]” after a path that identifies a data subject.",
        None,
        None,
    ),
    ("register", "Register", Some("Enregistrer"), Some("Registreren")),
    ("version", "Version", Some("Version"), Some("Versie")),
    ("time", "Time", Some("Heure"), Some("Tijd")),
    ("actor", "By", Some("Par"), Some("Door")),
    ("operation", "Operation", Some("Opération"), Some("Bewerking")),
    ("summary", "Summary", Some("Résumé"), Some("Samenvatting")),
    ("activity", "The last hour", Some("La dernière heure"), Some("Het laatste uur")),
    ("calls", "Calls", Some("Appels"), Some("Oproepen")),
    ("refused", "Refused", Some("Refusés"), Some("Geweigerd")),
    ("granted", "Answered", Some("Répondus"), Some("Beantwoord")),
    ("calls_per_minute", "Calls per minute", Some("Appels par minute"), Some("Oproepen per minuut")),
    ("refusals_by_code", "Refusals by code", None, None),
    ("p99_by_service", "99th percentile of the duration, by service", None, None),
    ("readiness", "Readiness now", None, None),
    ("ready", "Ready", Some("Prêt"), Some("Klaar")),
    ("store", "Store", None, None),
    ("audit_writable", "Audit trail writable", None, None),
    ("reachable", "Reachable", None, None),
    ("yes", "yes", Some("oui"), Some("ja")),
    ("no", "no", Some("non"), Some("nee")),
    ("metrics_link", "All metrics (Prometheus text, operations listener)", None, None),
    ("publication", "Publication", Some("Publication"), Some("Publicatie")),
    (
        "publication_text",
        "The flows in force as the public listener publishes them now: instrument, recipients, services and fields.",
        None,
        None,
    ),
];
