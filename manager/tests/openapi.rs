//! `docs/openapi.json` against the running manager: every documented operation exists and
//! answers, with valid credentials and its documented example body, a documented status whose
//! body validates against the documented schema (JSON Schema, checked with the `jsonschema`
//! crate); without a token, a documented 401. Every route the API router serves is documented.
//! A stored report also validates against `docs/report.schema.json`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;

fn read_json(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `schema` with every `#/components/schemas/...` reference replaced by its target; the
/// report's external schema stands in as `true` (it is checked on its own below).
fn inline(schema: &Value, doc: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    let target = &doc["components"]["schemas"][name];
                    assert!(!target.is_null(), "dangling $ref {r}");
                    return inline(target, doc);
                }
                assert_eq!(r, "report.schema.json", "unknown $ref");
                return Value::Bool(true);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), inline(v, doc)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline(v, doc)).collect()),
        other => other.clone(),
    }
}

fn check_schema(what: &str, schema: &Value, doc: &Value, instance: &Value) {
    let schema = inline(schema, doc);
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{what}: schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}\n{instance:#}");
}

/// The routes `src/api/mod.rs` registers.
fn served_routes() -> BTreeSet<String> {
    let src = include_str!("../src/api/mod.rs");
    src.split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_documented_api_is_the_served_api() {
    let doc = read_json("../docs/openapi.json");
    let report_schema = read_json("../docs/report.schema.json");
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented, served_routes(), "documented vs served routes");

    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let m = Manager::start(&db, &[]);
    // Something to list: a report, a heartbeat, two jobs (one of them held, to complete).
    let report = sample_report("/vm/a.qcow2");
    let scan = post_report(&m, Some(&appliance), "seed", report.to_string().as_bytes());
    assert_eq!(scan.status, 201);
    let scan = scan.json["id"].as_i64().unwrap();
    for target in ["/vm/one.qcow2", "/vm/two.qcow2"] {
        let a = post_json(
            &m,
            "/api/v1/jobs",
            &admin,
            &serde_json::json!({ "target": target }),
        );
        assert_eq!(a.status, 201);
    }
    let held = post_json(&m, "/api/v1/jobs/claim", &appliance, &serde_json::json!({}));
    let held = held.json["id"].as_i64().unwrap();

    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{} {path}", method.to_uppercase());
            let url = format!(
                "{}{}",
                m.url,
                path.replace(
                    "{id}",
                    &if path.starts_with("/api/v1/jobs/") {
                        held
                    } else {
                        scan
                    }
                    .to_string()
                )
                // The hypervisor the POST example registers; a VM the inventory does not have.
                .replace("{name}", "kvm-01")
                .replace("{uuid}", "no-such-vm")
            );
            let role = op["security"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s.as_object())
                .and_then(|s| s.keys().next().cloned());
            let token = match role.as_deref() {
                None => None,
                Some("appliance") => Some(appliance.as_str()),
                Some("admin") => Some(admin.as_str()),
                Some(other) => panic!("{what}: unknown security scheme {other}"),
            };
            let content = &op["requestBody"]["content"]["application/json"];
            let body = if path == "/api/v1/reports" {
                Some(report.to_string())
            } else {
                content.get("example").map(|e| e.to_string())
            };
            let mut headers = vec![("Content-Type", "application/json")];
            if path == "/api/v1/reports" {
                headers.push(("Idempotency-Key", "openapi-check"));
            }
            let method_up = method.to_uppercase();
            let a = call(
                &method_up,
                &url,
                token,
                &headers,
                body.as_deref().map(str::as_bytes),
            );
            let status = a.status.to_string();
            let response = &op["responses"][&status];
            assert!(
                !response.is_null(),
                "{what}: HTTP {status} is not documented: {}",
                a.json
            );
            if let Some(schema) = response["content"]["application/json"].get("schema") {
                check_schema(&format!("{what} {status}"), schema, &doc, &a.json);
            } else {
                assert_eq!(
                    a.json,
                    Value::String(String::new()),
                    "{what}: undocumented body"
                );
            }
            if token.is_some() {
                let a = call(
                    &method_up,
                    &url,
                    None,
                    &headers,
                    body.as_deref().map(str::as_bytes),
                );
                assert_eq!(a.status, 401, "{what} without a token");
                assert!(!op["responses"]["401"].is_null(), "{what}: 401 documented");
                let schema = &op["responses"]["401"]["content"]["application/json"]["schema"];
                check_schema(&format!("{what} 401"), schema, &doc, &a.json);
            }
            operations += 1;
        }
    }
    assert!(operations >= 14, "{operations} operations checked");

    // The stored report validates against the published report schema.
    let mut stored = get(&m, &format!("/api/v1/scans/{scan}"), &admin).json;
    stored.as_object_mut().unwrap().remove("id");
    stored.as_object_mut().unwrap().remove("appliance");
    let validator = jsonschema::validator_for(&report_schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&stored)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
