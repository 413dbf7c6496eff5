//! Fails when the committed CRD YAML differs from what the Rust types generate. Regenerate with
//!
//! ```sh
//! cargo run -p rc-operator -- crd > crds/replicatedclusters.yaml
//! cargo run -p rc-operator -- crd --helm > charts/rc-operator/templates/crd.yaml
//! ```

use std::path::Path;

use rc_operator::crd::{crd_helm_template, crd_yaml, CHART_CRD_PATH, CRD_PATH};

fn committed(relative: &str) -> Result<String, std::io::Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(relative))
}

#[test]
fn the_committed_crd_matches_the_rust_types() -> Result<(), Box<dyn std::error::Error>> {
    assert!(
        committed(CRD_PATH)? == crd_yaml()?,
        "{CRD_PATH} is out of date: run `cargo run -p rc-operator -- crd > {CRD_PATH}`"
    );
    Ok(())
}

#[test]
fn the_charts_crd_template_matches_the_rust_types() -> Result<(), Box<dyn std::error::Error>> {
    assert!(
        committed(CHART_CRD_PATH)? == crd_helm_template()?,
        "{CHART_CRD_PATH} is out of date: run `cargo run -p rc-operator -- crd --helm > {CHART_CRD_PATH}`"
    );
    Ok(())
}

#[test]
fn the_crd_contains_no_helm_template_syntax() -> Result<(), Box<dyn std::error::Error>> {
    // The chart copy is a Helm template: `{{` inside a description would be evaluated by Helm.
    assert!(!crd_yaml()?.contains("{{"));
    Ok(())
}
