//! Runs the Python client tests (tests/python) with the venv tests/setup.sh prepares:
//! jubilant against `charm-harness` as its `juju`, and a charm written with ops.

#[path = "../../tests/support/mod.rs"]
mod support;

#[test]
fn jubilant_and_ops_work_against_the_controller() {
    let venv = support::fixtures().join("venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run tests/setup.sh",
        venv.display()
    );
    let home = tempfile::Builder::new()
        .prefix("harness-py-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = support::repo_root();
    let out = std::process::Command::new(&venv)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/python"))
        .env("HARNESS_BIN", support::harness_bin())
        .env("REPO_ROOT", &root)
        .env("CHARM_HARNESS_HOME", home.path())
        .env("CHARM_HARNESS_CHARMHUB", support::charmhub())
        .output()
        .unwrap();
    let _ = std::process::Command::new(support::harness_bin())
        .arg("kill-controller")
        .env("CHARM_HARNESS_HOME", home.path())
        .output();
    assert!(
        out.status.success(),
        "pytest failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
