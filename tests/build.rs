//! Builds the guest jobs the tests run (samples and hostile guests) for `wasm32-unknown-unknown`,
//! in a target directory of their own, and exports their paths as `GUEST_*` constants.
//! A guest without a test is noticed: every guest built here has a constant, and every constant is
//! used by a test.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("sample-visits-by-district", "GUEST_VISITS_BY_DISTRICT"),
    ("sample-tourism-spend", "GUEST_TOURISM_SPEND"),
    ("guest-hostile", "GUEST_HOSTILE"),
    ("guest-smuggler", "GUEST_SMUGGLER"),
    ("sample-tourism-per-person", "GUEST_TOURISM_PER_PERSON"),
    (
        "sample-tourism-per-person-rows",
        "GUEST_TOURISM_PER_PERSON_ROWS",
    ),
    ("guest-rows-hostile", "GUEST_ROWS_HOSTILE"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: keep guests beside, in <target>/guests.
    let target_dir = out.ancestors().nth(4).unwrap_or(&out).join("guests");

    for dir in [
        "guest-sdk/src",
        "guest-sdk/wit",
        "guest-sdk/Cargo.toml",
        "samples/visits-by-district",
        "samples/tourism-spend",
        "samples/tourism-per-person",
        "tests/guests",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (pkg, _) in GUESTS {
        cmd.args(["-p", pkg]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo to build the guest jobs");
    if !status.success() {
        panic!(
            "building the guest jobs failed; is the wasm target installed? run `rustup target add wasm32-unknown-unknown`"
        );
    }
    for (pkg, constant) in GUESTS {
        let file = wasm_path(&target_dir, pkg);
        assert!(
            file.exists(),
            "guest {pkg} was not built at {}",
            file.display()
        );
        println!("cargo:rustc-env={constant}={}", file.display());
    }
}

fn wasm_path(target_dir: &Path, pkg: &str) -> PathBuf {
    target_dir
        .join("wasm32-unknown-unknown/guest")
        .join(format!("{}.wasm", pkg.replace('-', "_")))
}

/// Installs the wasm target when the toolchain lacks it (a fresh machine): `rustup target add` is
/// idempotent, but asking only when needed keeps builds offline-friendly.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if sysroot.join("lib/rustlib/wasm32-unknown-unknown").exists() {
            return;
        }
    }
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"])
        .status();
}
