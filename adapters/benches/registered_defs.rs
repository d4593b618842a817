//! The registrations the registered-layout bench and the instruction-count example compare
//! with the built-in layouts: `div.vehicle` from its published XSD, `sigedis.pensions` from its
//! JSON Schema, each with a catalogue naming the built-in layout's fields.

#![allow(clippy::expect_used, clippy::unwrap_used)]
use adapters::ServiceDef;
use adapters::registered::compile;
use serde_json::json;

pub fn registered_vehicle() -> ServiceDef {
    let builtin = adapters::div::vehicle_service();
    let field = |f: &str, p: &str| json!({ "field": f, "path": p });
    let body = json!({
        "id": "div.vehicle", "source": "div", "fields": builtin.fields(),
        "exposure": {
            "method": "POST", "path": "/div/vehicle-registered", "upstream_path": builtin.upstream_path,
            "dialect": "soap",
            "layout": { "xsd": adapters::div::XSD, "request_element": "GetVehicleRequest",
                        "response_element": "GetVehicleResponse" },
            "catalogue": [
                field("plate", "Vehicle/Plate"), field("vin", "Vehicle/Vin"), field("make", "Vehicle/Make"),
                field("model", "Vehicle/Model"), field("fuel", "Vehicle/Fuel"),
                field("firstRegistrationDate", "Vehicle/FirstRegistrationDate"),
                field("registrationDate", "Vehicle/RegistrationDate"),
                field("holderId", "Vehicle/Holder/Id"), field("holderName", "Vehicle/Holder/Name"),
                field("holderAddress", "Vehicle/Holder/Address"), field("insurer", "Vehicle/Insurer"),
                { "path": "Vehicle/Holder/Id/Niss", "subject": "person" },
                { "path": "Vehicle/Holder/Id/EnterpriseNumber", "subject": "organisation" }
            ]
        }
    });
    compile(&serde_json::from_value(body).expect("a service")).expect("it compiles").def
}

pub fn registered_pensions() -> ServiceDef {
    let builtin = adapters::sigedis::pensions_service();
    let def = builtin.layout.unwrap();
    let mut catalogue = vec![json!({ "path": "/niss", "subject": "person" })];
    for (f, p) in def.fields {
        let org = matches!(*f, "organiser" | "institution");
        catalogue.push(if org {
            json!({ "field": f, "path": p, "subject": "organisation" })
        } else {
            json!({ "field": f, "path": p })
        });
    }
    let body = json!({
        "id": "sigedis.pensions", "source": "sigedis", "fields": builtin.fields(),
        "exposure": {
            "method": "GET", "path": "/sigedis/pensions-registered", "upstream_path": builtin.upstream_path,
            "dialect": "json", "subject": "niss",
            "layout": { "response_schema": def.response_schema },
            "catalogue": catalogue
        }
    });
    compile(&serde_json::from_value(body).expect("a service")).expect("it compiles").def
}
