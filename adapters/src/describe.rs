//! Published descriptions of registered services, generated from their layouts: a WSDL 1.1
//! document (document/literal, SOAP 1.1 over HTTP, the registered XSD inline) for a SOAP
//! service, an OpenAPI 3.1 document of the data plane for a JSON service. A client generated
//! from either calls the gateway unmodified; the envelope headers every call needs
//! (`X-Legal-Basis`, `X-Purpose`, `X-Subject` where the service is about a subject) are
//! described too — in the WSDL as documentation, since WSDL 1.1 has no place for HTTP headers.

use serde_json::{Value, json};

use crate::registered::Registered;
use crate::{Protocol, SubjectKind};

fn operation(registered: &Registered) -> String {
    let from_element = registered.def.soap.map(|s| s.request.name.trim_end_matches("Request").to_owned());
    from_element.filter(|n| !n.is_empty()).unwrap_or_else(|| registered.def.id.replace(['.', '-'], "_"))
}

fn pascal(id: &str) -> String {
    id.split(['.', '-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

/// The XSD as it can sit inside `wsdl:types`: without its XML declaration.
fn inline_xsd(xsd: &str) -> &str {
    let t = xsd.trim_start();
    match t.strip_prefix("<?xml").and_then(|r| r.find("?>").map(|i| &r[i + 2..])) {
        Some(rest) => rest.trim_start(),
        None => t,
    }
}

fn headers_doc(subject: SubjectKind) -> &'static str {
    match subject {
        SubjectKind::None => {
            "Every call carries the HTTP headers X-Legal-Basis (the instrument's reference) and X-Purpose (a purpose it grants); X-End-User where the grant names end users. The answer holds only the fields the instrument grants."
        }
        _ => {
            "Every call carries the HTTP headers X-Legal-Basis (the instrument's reference), X-Purpose (a purpose it grants) and X-Subject (the data subject); X-End-User where the grant names end users. The answer holds only the fields the instrument grants."
        }
    }
}

/// The WSDL 1.1 of a registered SOAP service, with `base` (`https://host:port`) as the
/// address. `None` for a JSON service.
pub fn wsdl(registered: &Registered, base: &str) -> Option<String> {
    let soap = registered.def.soap?;
    let xsd = registered.xsd?;
    let name = pascal(registered.def.id);
    let op = operation(registered);
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let (ns, req, resp) = (esc(soap.ns), esc(soap.request.name), esc(soap.response.name));
    let location = esc(&format!("{}{}", base.trim_end_matches('/'), registered.def.path));
    let doc = esc(headers_doc(registered.def.subject));
    let id = esc(registered.def.id);
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:tns="{ns}" targetNamespace="{ns}" name="{name}">
  <wsdl:documentation>Passerelle service {id}, generated from its registered layout. {doc}</wsdl:documentation>
  <wsdl:types>
{types}
  </wsdl:types>
  <wsdl:message name="{op}Input"><wsdl:part name="body" element="tns:{req}"/></wsdl:message>
  <wsdl:message name="{op}Output"><wsdl:part name="body" element="tns:{resp}"/></wsdl:message>
  <wsdl:portType name="{name}PortType">
    <wsdl:operation name="{op}"><wsdl:input message="tns:{op}Input"/><wsdl:output message="tns:{op}Output"/></wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="{name}Binding" type="tns:{name}PortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="{op}">
      <soap:operation soapAction="" style="document"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="{name}">
    <wsdl:port name="{name}Port" binding="tns:{name}Binding"><soap:address location="{location}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"#,
        types = inline_xsd(xsd),
    ))
}

fn header(name: &str, required: bool, description: &str) -> Value {
    json!({ "name": name, "in": "header", "required": required, "description": description, "schema": { "type": "string" } })
}

/// The OpenAPI 3.1 document of the data plane for a registered JSON service, with `base`
/// (`https://host:port`) as its server. `None` for a SOAP service.
pub fn openapi(registered: &Registered, base: &str) -> Option<Value> {
    let def = &registered.def;
    if def.protocol != Protocol::Json {
        return None;
    }
    let layout = def.layout?;
    let response: Value = serde_json::from_str(layout.response_schema).ok()?;
    let request: Option<Value> = layout.request_schema.and_then(|r| serde_json::from_str(r).ok());
    let mut parameters = vec![
        header("X-Legal-Basis", true, "The reference of the instrument the call rests on."),
        header("X-Purpose", true, "The purpose of the call, one the instrument grants."),
        header("X-End-User", false, "The end user, where the grant names end users or a role."),
        header("X-Request-Id", false, "Echoed in the answer and kept in the audit record."),
        header("traceparent", false, "W3C trace context."),
    ];
    let subject = match def.subject {
        SubjectKind::None => None,
        SubjectKind::Niss => Some("A national or BIS number (11 digits, mod-97 checked)."),
        SubjectKind::Kbo => Some("An enterprise number (10 digits, mod-97 checked)."),
        SubjectKind::Association => Some("An association's vCode or enterprise number."),
    };
    if let Some(d) = subject {
        parameters.insert(2, header("X-Subject", true, d));
    }
    let problem = json!({ "description": "A refusal: its stable code in `code` and in the X-Passerelle-Code header",
        "content": { "application/problem+json": { "schema": { "type": "object",
            "required": ["type", "title", "status", "code"],
            "properties": { "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                "code": { "type": "string" }, "detail": { "type": "string" } } } } } });
    let mut op = json!({
        "operationId": def.id.replace(['.', '-'], "_"),
        "summary": format!("Passerelle service {}", def.id),
        "description": headers_doc(def.subject),
        "parameters": parameters,
        "responses": {
            "200": { "description": "The answer, reduced to the granted fields",
                     "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Answer" } } } },
            "default": problem,
        },
    });
    let mut schemas = serde_json::Map::new();
    schemas.insert("Answer".into(), component(response, "Answer"));
    if let Some(request) = request {
        schemas.insert("Request".into(), component(request, "Request"));
        op["requestBody"] = json!({ "required": true,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Request" } } } });
    }
    let method = def.method.as_str().to_ascii_lowercase();
    Some(json!({
        "openapi": "3.1.0",
        "info": { "title": format!("Passerelle – {}", def.id), "version": "1",
                  "description": "Generated from the service's registered layout." },
        "servers": [{ "url": base.trim_end_matches('/') }],
        "paths": { def.path: { method: op } },
        "components": { "schemas": schemas },
    }))
}

/// A registered schema as a component of the document: its local references (`#/$defs/x`)
/// point into the component (`#/components/schemas/{name}/$defs/x`), and its `$id` and
/// `$schema` go (the document's dialect is 2020-12, and an `$id` would move the base the
/// references resolve against).
fn component(mut schema: Value, name: &str) -> Value {
    fn rewrite(v: &mut Value, prefix: &str) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get_mut("$ref")
                    && let Some(rest) = r.strip_prefix('#')
                {
                    *r = format!("#{prefix}{rest}");
                }
                m.values_mut().for_each(|x| rewrite(x, prefix));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, prefix)),
            _ => {}
        }
    }
    if let Value::Object(m) = &mut schema {
        m.remove("$id");
        m.remove("$schema");
    }
    rewrite(&mut schema, &format!("/components/schemas/{name}"));
    schema
}
