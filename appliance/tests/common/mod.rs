//! Helpers shared by the `coldscan scan` end-to-end tests.

use std::path::Path;

/// Asserts that `report` validates against the published schema, `docs/report.schema.json`.
pub fn schema_check(report: &serde_json::Value) {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "report violates the schema: {errors:#?}");
}
