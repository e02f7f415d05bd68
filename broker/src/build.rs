//! `sluice build` and `sluice new`: a job from its source folder, whatever the language.
//!
//! - A folder with `Cargo.toml` is a Rust job: `cargo build --release --target
//!   wasm32-unknown-unknown` (the target is installed once if missing).
//! - A folder with `job.py` is a Python job: componentize-py builds a component for the
//!   `sluice:wasi-job/python-job` world (the job contract and the null WASI) from the job's
//!   folder and the Python SDK, with the SDK's `sluice._app` as the entry point. componentize-py
//!   lives in a virtual environment this module creates on first use
//!   (`$SLUICE_PYTHON_VENV`, else `~/.cache/sluice/pyvenv`), pinned to [`COMPONENTIZE_PY`].
//!   The SDK and the WIT files are compiled into this binary and written next to it, so a job
//!   builds the same inside or outside this repository.
//!
//! The component is written to `<folder>/build/job.wasm` (Python) or cargo's target directory
//! (Rust), and its path is returned. A Rust job with row functions keeps them in a crate of
//! their own in `<folder>/rows/` (a module that imports nothing): both are built, and the job
//! ships as `<job>.job.wasm` beside cargo's output, the rows module inside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The componentize-py release Python jobs are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The Python SDK and the WIT it builds against, as compiled into this binary: (path, text).
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "python/sluice/__init__.py",
        include_str!("../../guest-sdk/python/sluice/__init__.py"),
    ),
    (
        "python/sluice/_app.py",
        include_str!("../../guest-sdk/python/sluice/_app.py"),
    ),
    ("wit/job.wit", include_str!("../../guest-sdk/wit/job.wit")),
    (
        "wasi/world.wit",
        include_str!("../../guest-sdk/wasi/world.wit"),
    ),
    (
        "wasi/deps/cli.wit",
        include_str!("../../guest-sdk/wasi/deps/cli.wit"),
    ),
    (
        "wasi/deps/clocks.wit",
        include_str!("../../guest-sdk/wasi/deps/clocks.wit"),
    ),
    (
        "wasi/deps/filesystem.wit",
        include_str!("../../guest-sdk/wasi/deps/filesystem.wit"),
    ),
    (
        "wasi/deps/io.wit",
        include_str!("../../guest-sdk/wasi/deps/io.wit"),
    ),
    (
        "wasi/deps/random.wit",
        include_str!("../../guest-sdk/wasi/deps/random.wit"),
    ),
    (
        "wasi/deps/sockets.wit",
        include_str!("../../guest-sdk/wasi/deps/sockets.wit"),
    ),
];

/// What language a job folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// `Cargo.toml`: the Rust SDK.
    Rust,
    /// `job.py`: the Python SDK.
    Python,
}

impl Lang {
    /// The language of the job in `dir`.
    pub fn of(dir: &Path) -> Result<Self> {
        match (
            dir.join("Cargo.toml").is_file(),
            dir.join("job.py").is_file(),
        ) {
            (true, false) => Ok(Self::Rust),
            (false, true) => Ok(Self::Python),
            (true, true) => bail!(
                "{} has both Cargo.toml and job.py; a job folder holds one language",
                dir.display()
            ),
            (false, false) => bail!(
                "{} is not a job folder: it has neither Cargo.toml (Rust) nor job.py (Python); `sluice new --lang python <name>` writes one",
                dir.display()
            ),
        }
    }
}

/// Builds the job in `dir`; returns the component's (or module's) path.
pub fn build(dir: &Path) -> Result<PathBuf> {
    match Lang::of(dir)? {
        Lang::Rust => build_rust(dir),
        Lang::Python => build_python(dir),
    }
}

fn build_rust(dir: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    let manifest = dir.join("Cargo.toml");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("while running `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed for {}:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let target_dir = PathBuf::from(meta["target_directory"].as_str().unwrap_or("target"));
    let manifest_path = std::fs::canonicalize(&manifest)?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(PathBuf::from) == Some(manifest_path.clone()))
        .and_then(|p| p["name"].as_str())
        .context("cargo metadata names no package for this folder")?
        .to_string();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("while running cargo")?;
    if !status.success() {
        bail!("cargo could not build the job in {}", dir.display());
    }
    let wasm = target_dir
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    if !wasm.is_file() {
        bail!(
            "cargo built no {} (is the crate a `cdylib`, as `sluice new --lang rust` writes it?)",
            wasm.display()
        );
    }
    // Row functions: a crate of their own in `rows/`, shipped inside the job's binary.
    let rows = dir.join("rows");
    if rows.join("Cargo.toml").is_file() {
        let rows_wasm = build_rust(&rows)
            .with_context(|| format!("while building the row functions in {}", rows.display()))?;
        let shipped = wasm.with_extension("job.wasm");
        ship_rows(&wasm, &rows_wasm, &shipped)?;
        return Ok(shipped);
    }
    Ok(wasm)
}

/// Writes to `out` the job at `job` with the rows module at `rows` inside it (its
/// `sluice-rows` section; see the runtime's `rows` module).
pub fn ship_rows(job: &Path, rows: &Path, out: &Path) -> Result<()> {
    let read =
        |p: &Path| std::fs::read(p).with_context(|| format!("while reading {}", p.display()));
    let shipped = sluice_runtime::rows::embed(&read(job)?, &read(rows)?).map_err(|e| {
        anyhow::anyhow!(
            "cannot put {} inside {}: {e}",
            rows.display(),
            job.display()
        )
    })?;
    std::fs::write(out, shipped).with_context(|| format!("while writing {}", out.display()))
}

/// Installs the wasm target if it is missing (idempotent; needs rustup).
pub fn ensure_wasm_target() -> Result<()> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    if let Ok(out) = sysroot {
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if root.join("lib/rustlib/wasm32-unknown-unknown").exists() {
            return Ok(());
        }
    }
    eprintln!("installing the wasm32-unknown-unknown target (once)…");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"])
        .status()
        .context("while running `rustup target add wasm32-unknown-unknown`")?;
    if !status.success() {
        bail!("`rustup target add wasm32-unknown-unknown` failed");
    }
    Ok(())
}

/// Where componentize-py's virtual environment lives.
pub fn python_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SLUICE_PYTHON_VENV") {
        return PathBuf::from(v);
    }
    cache_dir().join("pyvenv")
}

/// Sluice's cache directory: `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("sluice")
}

/// componentize-py, installed into [`python_venv`] first if it is missing or another release.
pub fn componentize_py() -> Result<PathBuf> {
    let venv = python_venv();
    let exe = venv.join("bin/componentize-py");
    let installed = Command::new(&exe)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() == Some(&format!("componentize-py {COMPONENTIZE_PY}")) {
        return Ok(exe);
    }
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once)…",
        venv.display()
    );
    if !venv.join("bin/pip").is_file() {
        let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
        let status = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| format!("while running `{python} -m venv` (Python 3.10 or later is needed to build Python jobs)"))?;
        if !status.success() {
            bail!("`{python} -m venv {}` failed", venv.display());
        }
    }
    let status = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            &format!("componentize-py=={COMPONENTIZE_PY}"),
        ])
        .status()
        .context("while running pip")?;
    if !status.success() {
        bail!("pip could not install componentize-py {COMPONENTIZE_PY}");
    }
    Ok(exe)
}

/// Writes the SDK and WIT compiled into this binary under the cache directory (once per
/// content) and returns that directory.
fn sdk_dir() -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (path, text) in PYTHON_SDK {
        h.update(path.as_bytes());
        h.update(text.as_bytes());
    }
    let dir = cache_dir().join(format!("python-sdk-{}", &hex::encode(h.finalize())[..16]));
    if !dir.join("done").is_file() {
        for (path, text) in PYTHON_SDK {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap_or(&dir))?;
            std::fs::write(&p, text).with_context(|| format!("while writing {}", p.display()))?;
        }
        std::fs::write(dir.join("done"), "")?;
    }
    Ok(dir)
}

fn build_python(dir: &Path) -> Result<PathBuf> {
    let exe = componentize_py()?;
    let sdk = sdk_dir()?;
    let out_dir = dir.join("build");
    std::fs::create_dir_all(&out_dir)?;
    let wasm = out_dir.join("job.wasm");
    let output = Command::new(&exe)
        .arg("-d")
        .arg(sdk.join("wit/job.wit"))
        .arg("-d")
        .arg(sdk.join("wasi"))
        .args([
            "-w",
            "sluice:wasi-job/python-job",
            "--quiet",
            "componentize",
            "sluice._app",
        ])
        .arg("-p")
        .arg(dir)
        .arg("-p")
        .arg(sdk.join("python"))
        .arg("-o")
        .arg(&wasm)
        // The job's own folder first, and nothing from the environment's site-packages.
        .env_remove("VIRTUAL_ENV")
        .output()
        .context("while running componentize-py")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // componentize-py reports a Python error in the job as a traceback inside its own;
        // keep the Python part.
        let python: Vec<&str> = stderr
            .lines()
            .skip_while(|l| !l.contains("Traceback") && !l.contains("Error"))
            .take_while(|l| !l.trim_start().starts_with("Stack backtrace"))
            .collect();
        bail!(
            "componentize-py could not build the job in {}:\n{}",
            dir.display(),
            if python.is_empty() {
                stderr.to_string()
            } else {
                python.join("\n")
            }
        );
    }
    Ok(wasm)
}

/// Writes a new job folder `dir` for `lang`: a job that answers one question on the demo data;
/// with `rows`, a Rust job with a row function in `rows/` (guest-sdk/ROWS.md).
pub fn new(dir: &Path, lang: Lang, rows: bool) -> Result<()> {
    if dir.exists() {
        bail!("{} exists already; choose a new folder", dir.display());
    }
    if rows && lang == Lang::Python {
        bail!(
            "row functions are written in Rust (a module that imports nothing); use --lang rust with --rows"
        );
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the job folder needs a name")?;
    std::fs::create_dir_all(dir)?;
    match lang {
        Lang::Python => {
            std::fs::write(dir.join("job.py"), PYTHON_TEMPLATE)?;
            std::fs::write(dir.join(".gitignore"), "build/\n")?;
        }
        Lang::Rust => {
            write_rust_sdk(&dir.join("sluice-guest"))?;
            std::fs::create_dir_all(dir.join("src"))?;
            std::fs::write(
                dir.join("Cargo.toml"),
                RUST_MANIFEST.replace("{name}", name),
            )?;
            std::fs::write(
                dir.join("src/lib.rs"),
                if rows { RUST_ROWS_JOB } else { RUST_TEMPLATE },
            )?;
            std::fs::write(dir.join(".gitignore"), "target/\n")?;
            if rows {
                std::fs::create_dir_all(dir.join("rows/src"))?;
                std::fs::write(
                    dir.join("rows/Cargo.toml"),
                    RUST_ROWS_MANIFEST.replace("{name}", name),
                )?;
                std::fs::write(dir.join("rows/build.rs"), RUST_ROWS_BUILD)?;
                std::fs::write(dir.join("rows/src/lib.rs"), RUST_ROWS)?;
            }
        }
    }
    Ok(())
}

/// The example policies (`policies/examples`), as compiled into this binary: (file, text).
const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "grades.toml",
        include_str!("../../policies/examples/grades.toml"),
    ),
    (
        "health.toml",
        include_str!("../../policies/examples/health.toml"),
    ),
    (
        "tourism.toml",
        include_str!("../../policies/examples/tourism.toml"),
    ),
];

/// Where the example policies are read from outside this repository: written from this binary
/// into the cache on first use, so that `sluice run` and `sluice plan` work in any folder with
/// the data `sluice datagen` writes there.
pub fn example_policies() -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, text) in EXAMPLE_POLICIES {
        h.update(name.as_bytes());
        h.update(text.as_bytes());
    }
    let dir = cache_dir().join(format!(
        "example-policies-{}",
        &hex::encode(h.finalize())[..16]
    ));
    if !dir.join("health.toml").is_file() {
        std::fs::create_dir_all(&dir)?;
        for (name, text) in EXAMPLE_POLICIES {
            std::fs::write(dir.join(name), text)
                .with_context(|| format!("while writing {}", dir.join(name).display()))?;
        }
    }
    Ok(dir)
}

/// The Rust SDK as compiled into this binary: (path in the crate, text).
const RUST_SDK: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../guest-sdk/src/lib.rs")),
    ("wit/job.wit", include_str!("../../guest-sdk/wit/job.wit")),
];

/// The SDK's manifest, inheriting nothing from this repository's workspace.
fn rust_sdk_manifest() -> String {
    let workspace = include_str!("../../guest-sdk/Cargo.toml");
    workspace
        .lines()
        .filter_map(|line| match line.split_once(".workspace") {
            None => Some(line.to_string()),
            Some(("version", _)) => Some(format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
            Some(("edition", _)) => Some("edition = \"2024\"".into()),
            Some(("license", _)) => Some("license = \"Apache-2.0\"".into()),
            Some(_) => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Writes the Rust SDK crate `sluice-guest` into `dir` (a job folder's vendored copy).
pub fn write_rust_sdk(dir: &Path) -> Result<()> {
    for (path, text) in RUST_SDK {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(dir))?;
        std::fs::write(&p, text).with_context(|| format!("while writing {}", p.display()))?;
    }
    std::fs::write(dir.join("Cargo.toml"), rust_sdk_manifest())?;
    Ok(())
}

const PYTHON_TEMPLATE: &str = r#""""How many visits did each district's clinics see? (A Sluice job: `sluice build .`, then
`sluice run --operator canal-analytics build/job.wasm`.)"""

from sluice import Job, Report


def run(job: Job) -> Report:
    epsilon = job.param_float("epsilon", 0.5)
    visits = job.query(
        "SELECT district, COUNT(*) AS visits FROM health_visits GROUP BY district"
    ).epsilon(epsilon).run()
    total, width = visits.total("visits")
    return (
        Report("Visits by district")
        .table("visits", visits)
        .scalar("all visits", total, width)
        .text(f"Every count carries discrete Laplace noise; this cost ε={visits.cost.epsilon}.")
    )
"#;

const RUST_MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK, vendored by `sluice new` from the sluice binary that wrote this folder: commit it with
# the job, and the job builds the same anywhere, without the Sluice repository.
sluice-guest = { path = "sluice-guest" }

[profile.release]
opt-level = "s"
lto = true

[workspace]
"#;

const RUST_TEMPLATE: &str = r#"//! How many visits did each district's clinics see? (A Sluice job: `sluice build .`, then
//! `sluice run --operator canal-analytics --dataset health_visits <the printed path>`.)

use sluice_guest::{Job, Report, Result};

fn run(job: &mut Job) -> Result<Report> {
    let epsilon = job.param_f64("epsilon", 0.5)?;
    let visits = job
        .query("SELECT district, COUNT(*) AS visits FROM health_visits GROUP BY district")
        .epsilon(epsilon)
        .run()?;
    let (total, width) = visits.total("visits");
    Ok(Report::new("Visits by district")
        .table("visits", &visits)
        .scalar("all visits", total, Some(width)))
}

sluice_guest::job!(run);
"#;

const RUST_ROWS_JOB: &str = r#"//! What does one member of a travelling group spend per trip, by scenic spot? The row function
//! `per_person` (in `rows/`) runs inside the sandbox over each visitor's trips; the query sees only
//! its clamped output, in a DP average. (`sluice build .`, then `sluice run --operator
//! yangzhou-tourism-lab --dataset tourism_trips <the printed path>`.)

use sluice_guest::{Job, PrivacyMeasure, Report, Result};

fn run(job: &mut Job) -> Result<Report> {
    let zcdp = matches!(
        job.describe("tourism_trips").map(|d| d.privacy_measure),
        Some(PrivacyMeasure::Zcdp)
    );
    let query = job.query(
        "SELECT spot, AVG(per_person(spend, group_size)) AS spend_per_person \
         FROM tourism_trips GROUP BY spot",
    );
    let spend = if zcdp {
        query.rho(job.param_f64("rho", 0.25)?)
    } else {
        query.epsilon(job.param_f64("epsilon", 0.5)?)
    }
    .run()?;
    Ok(Report::new("Spend per person by scenic spot").table("spend per person", &spend))
}

sluice_guest::job!(run);
"#;

const RUST_ROWS_MANIFEST: &str = r#"[package]
name = "{name}-rows"
version = "0.1.0"
edition = "2024"

# The job's row functions: a module of their own that imports nothing. `sluice build` on the
# job's folder builds this crate too and ships it inside the job's wasm.
[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-guest = { path = "../sluice-guest" }

[profile.release]
opt-level = "s"
lto = true

[workspace]
"#;

const RUST_ROWS_BUILD: &str = r#"//! A 32 KiB stack (rustc's default for wasm is 1 MiB): each privacy unit's rows run in a fresh
//! instance, and a small memory is reset fastest.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=32768");
}
"#;

const RUST_ROWS: &str = r#"//! Row functions: each runs over one visitor's rows at a time, in a fresh instance. Arguments are
//! numbers (NULL as NaN); the output is clamped to its public bounds; a trap, running out of fuel,
//! NaN or an infinity gives the default. See guest-sdk/ROWS.md in the Sluice repository.

// What one member of a travelling group spent on a trip (0 to 2,000 CNY, clamped).
sluice_guest::row_function!(per_person(spend, group_size) in [0.0, 2000.0] default 0.0 => {
    if spend.is_nan() || group_size.is_nan() {
        return 0.0;
    }
    spend / group_size.max(1.0)
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_sdk_inherits_nothing_from_this_workspace() {
        let m = rust_sdk_manifest();
        assert!(!m.contains(".workspace"), "{m}");
        assert!(m.contains("name = \"sluice-guest\""), "{m}");
        assert!(
            m.contains("version = \"0.1.0\"") && m.contains("wit-bindgen"),
            "{m}"
        );
        assert!(m.contains("edition = \"2024\""), "{m}");
    }

    #[test]
    fn a_folder_is_rust_or_python_and_says_so_when_neither() {
        let dir = std::env::temp_dir().join(format!("sluice-lang-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let e = Lang::of(&dir).unwrap_err().to_string();
        assert!(
            e.contains("neither Cargo.toml") && e.contains("sluice new"),
            "{e}"
        );
        std::fs::write(dir.join("job.py"), "").unwrap();
        assert_eq!(Lang::of(&dir).unwrap(), Lang::Python);
        std::fs::write(dir.join("Cargo.toml"), "").unwrap();
        assert!(
            Lang::of(&dir)
                .unwrap_err()
                .to_string()
                .contains("one language")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
