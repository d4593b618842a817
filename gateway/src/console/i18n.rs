//! The console's words, from one catalogue: English, French and Dutch, every key in all three
//! (a test checks). A row may leave a language out while it is being written: the page then
//! shows the English, never a missing label.

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
    (
        "not_registered",
        "This certificate's organisation is not registered with the gateway.",
        Some("L'organisation de ce certificat n'est pas enregistrée auprès de la passerelle."),
        Some("De organisatie van dit certificaat is niet geregistreerd bij de gateway."),
    ),
    ("forbidden", "Not for this organisation", Some("Pas pour cette organisation"), Some("Niet voor deze organisatie")),
    (
        "forbidden_text",
        "The role table does not give this organisation what this page shows.",
        Some("La table des rôles ne donne pas à cette organisation ce que montre cette page."),
        Some("De rollentabel geeft deze organisatie niet wat deze pagina toont."),
    ),
    (
        "sources_forbidden",
        "Only the data owner of a source, or the integrator, sees this page.",
        Some("Seul le propriétaire des données d'une source, ou l'intégrateur, voit cette page."),
        Some("Alleen de gegevenseigenaar van een bron, of de integrator, ziet deze pagina."),
    ),
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
    ("exposure", "Exposed at", Some("Exposé à"), Some("Aangeboden op")),
    ("description", "Description", Some("Description"), Some("Beschrijving")),
    ("reference", "Reference", Some("Référence"), Some("Referentie")),
    ("kind", "Kind", Some("Type"), Some("Soort")),
    ("title", "Title", Some("Titre"), Some("Titel")),
    ("state", "State", Some("État"), Some("Toestand")),
    ("in_force", "In force", Some("En vigueur"), Some("Van kracht")),
    ("parent", "Parent instrument", Some("Instrument parent"), Some("Bovenliggend instrument")),
    ("access_matrix", "Access matrix", Some("Matrice d'accès"), Some("Toegangsmatrix")),
    ("recipient", "Who", Some("Qui"), Some("Wie")),
    ("what", "What", Some("Quoi"), Some("Wat")),
    ("purpose", "Purpose", Some("Finalité"), Some("Doel")),
    ("until", "Until", Some("Jusqu'au"), Some("Tot")),
    ("actions", "Lifecycle actions", Some("Étapes du cycle de vie"), Some("Stappen van de levenscyclus")),
    (
        "no_actions",
        "No step leads on from this state.",
        Some("Aucune étape ne part de cet état."),
        Some("Vanuit deze toestand is er geen volgende stap."),
    ),
    ("move_to", "Move to", Some("Passer à"), Some("Overgaan naar")),
    ("reason", "Reason", Some("Motif"), Some("Reden")),
    (
        "gain",
        "Recipients who gain access",
        Some("Destinataires qui obtiennent l'accès"),
        Some("Ontvangers die toegang krijgen"),
    ),
    (
        "lose",
        "Recipients who lose access",
        Some("Destinataires qui perdent l'accès"),
        Some("Ontvangers die hun toegang verliezen"),
    ),
    (
        "no_change",
        "Who may call does not change.",
        Some("Qui peut appeler ne change pas."),
        Some("Wie mag bevragen, verandert niet."),
    ),
    (
        "evidence",
        "Evidence this step may need",
        Some("Pièces que cette étape peut demander"),
        Some("Stukken die deze stap kan vragen"),
    ),
    ("document_title", "Document title", Some("Titre du document"), Some("Titel van het document")),
    ("document_reference", "Document reference", Some("Référence du document"), Some("Referentie van het document")),
    (
        "text_version",
        "Convention text version",
        Some("Version du texte de la convention"),
        Some("Versie van de tekst van de overeenkomst"),
    ),
    ("layout_version", "Layout version", Some("Version du format"), Some("Versie van het formaat")),
    ("signatory_name", "Signatory's name", Some("Nom du signataire"), Some("Naam van de ondertekenaar")),
    (
        "signatory_capacity",
        "Signatory's capacity",
        Some("Qualité du signataire"),
        Some("Hoedanigheid van de ondertekenaar"),
    ),
    ("contact_name", "Contact name", Some("Nom du contact"), Some("Naam van de contactpersoon")),
    ("contact_email", "Contact e-mail", Some("Courriel du contact"), Some("E-mail van de contactpersoon")),
    ("contact_phone", "Contact phone", Some("Téléphone du contact"), Some("Telefoon van de contactpersoon")),
    ("requester", "Requester", Some("Demandeur"), Some("Aanvrager")),
    ("end_user", "End user", Some("Utilisateur final"), Some("Eindgebruiker")),
    ("approval", "Approval", Some("Approbation"), Some("Goedkeuring")),
    ("countdown", "Tacit approval", Some("Approbation tacite"), Some("Stilzwijgende goedkeuring")),
    (
        "days_to_approval",
        "days until tacit approval",
        Some("jours avant l'approbation tacite"),
        Some("dagen tot de stilzwijgende goedkeuring"),
    ),
    ("give_advice", "Give the advice", Some("Rendre l'avis"), Some("Advies geven")),
    ("favourable", "Favourable", Some("Favorable"), Some("Gunstig")),
    ("unfavourable", "Unfavourable", Some("Défavorable"), Some("Ongunstig")),
    ("advice_reference", "Advice reference", Some("Référence de l'avis"), Some("Referentie van het advies")),
    (
        "remark",
        "Make a remark (refuses the access)",
        Some("Formuler une remarque (refuse l'accès)"),
        Some("Een opmerking maken (weigert de toegang)"),
    ),
    ("about", "About", Some("Objet"), Some("Onderwerp")),
    ("period", "Period", Some("Période"), Some("Periode")),
    ("justification", "Justification", Some("Justification"), Some("Verantwoording")),
    ("advice", "Advice", Some("Avis"), Some("Advies")),
    (
        "download_results",
        "Download the result (JSON; reading it is recorded in the trail)",
        Some("Télécharger le résultat (JSON ; sa lecture est enregistrée dans la trace)"),
        Some("Het resultaat downloaden (JSON; het lezen ervan wordt in het auditspoor opgenomen)"),
    ),
    ("none", "None.", Some("Aucun."), Some("Geen.")),
    ("failed", "The change was refused", Some("La modification a été refusée"), Some("De wijziging werd geweigerd")),
    ("back", "Back", Some("Retour"), Some("Terug")),
    ("name", "Name", Some("Nom"), Some("Naam")),
    ("enterprise_number", "Enterprise number", Some("Numéro d'entreprise"), Some("Ondernemingsnummer")),
    ("policy_version", "Policy version", Some("Version de la politique"), Some("Versie van het beleid")),
    ("changes", "Changes", Some("Modifications"), Some("Wijzigingen")),
    ("not_found", "Nothing here", Some("Rien ici"), Some("Niets hier")),
    ("adhesions", "Adhesions", Some("Adhésions"), Some("Toetredingen")),
    ("requested_by", "Requested by", Some("Demandé par"), Some("Aangevraagd door")),
    ("filed_on", "Filed on", Some("Introduit le"), Some("Ingediend op")),
    (
        "register_xsd",
        "Register a service from its XSD",
        Some("Enregistrer un service à partir de son XSD"),
        Some("Een dienst registreren vanuit zijn XSD"),
    ),
    ("service_id", "Service identifier", Some("Identifiant du service"), Some("Identificatie van de dienst")),
    ("upstream_path", "Path at the source", Some("Chemin à la source"), Some("Pad bij de bron")),
    ("request_element", "Request element", Some("Élément de la demande"), Some("Element van de vraag")),
    ("response_element", "Answer element", Some("Élément de la réponse"), Some("Element van het antwoord")),
    ("subject_kind", "What X-Subject holds", Some("Ce que contient X-Subject"), Some("Wat X-Subject bevat")),
    ("xsd", "XSD of the payloads", Some("XSD des messages"), Some("XSD van de berichten")),
    ("catalogue", "Catalogue", Some("Catalogue"), Some("Catalogus")),
    (
        "catalogue_hint",
        "One entry a line: “field: Element/Path” for a grantable field, “Element/Path” for what is always kept, “[person]” or “[organisation]” after a path that identifies a data subject.",
        Some(
            "Une entrée par ligne : « champ: Élément/Chemin » pour un champ attribuable, « Élément/Chemin » pour ce qui est toujours gardé, « [person] » ou « [organisation] » après un chemin qui identifie une personne concernée.",
        ),
        Some(
            "Eén regel per item: „veld: Element/Pad” voor een toekenbaar veld, „Element/Pad” voor wat altijd blijft, „[person]” of „[organisation]” na een pad dat een betrokkene identificeert.",
        ),
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
    ("refusals_by_code", "Refusals by code", Some("Refus par code"), Some("Weigeringen per code")),
    (
        "p99_by_service",
        "99th percentile of the duration, by service",
        Some("99e centile de la durée, par service"),
        Some("99e percentiel van de duur, per dienst"),
    ),
    ("readiness", "Readiness now", Some("Disponibilité maintenant"), Some("Beschikbaarheid nu")),
    ("ready", "Ready", Some("Prêt"), Some("Klaar")),
    ("store", "Store", Some("Magasin"), Some("Opslag")),
    ("audit_writable", "Audit trail writable", Some("Trace d'audit inscriptible"), Some("Auditspoor beschrijfbaar")),
    ("reachable", "Reachable", Some("Joignable"), Some("Bereikbaar")),
    ("yes", "yes", Some("oui"), Some("ja")),
    ("no", "no", Some("non"), Some("nee")),
    (
        "metrics_link",
        "All metrics (Prometheus text, operations listener)",
        Some("Toutes les métriques (texte Prometheus, écouteur d'exploitation)"),
        Some("Alle metrieken (Prometheus-tekst, operationele listener)"),
    ),
    ("publication", "Publication", Some("Publication"), Some("Publicatie")),
    (
        "publication_text",
        "The flows in force as the public listener publishes them now: instrument, recipients, services and fields.",
        Some(
            "Les flux en vigueur tels que l'écouteur public les publie maintenant : instrument, destinataires, services et champs.",
        ),
        Some(
            "De stromen van kracht zoals de publieke listener ze nu publiceert: instrument, ontvangers, diensten en velden.",
        ),
    ),
];
