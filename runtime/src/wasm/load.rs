//! Loading a job: from the submitted bytes to the component the engine compiles, in named stages.
//!
//! A component is passed to wasmtime as it is (wasmtime validates it against [`JOB_FEATURES`]).
//! A core module built with the guest SDK goes through four stages:
//!
//! 1. [`validate_core`]: full validation with exactly [`JOB_FEATURES`], so that a truncated or
//!    malformed module, or one that uses a proposal jobs may not use, is refused with an error
//!    naming the problem before any other tool reads it;
//! 2. [`check_core_imports`]: every import must be a `sluice:job` interface of the version this
//!    host speaks, named in the error otherwise;
//! 3. [`with_host_metadata`]: the module's own `component-type` sections are dropped and the
//!    host's, encoded from `guest-sdk/wit/job.wit`, put in their place. The guest's metadata is
//!    never decoded: it is untrusted input, and wit-parser recurses without bound on some of it
//!    (a package cycle made by renaming one byte). The WIT file is the one contract, so the host's
//!    copy is the only one that counts;
//! 4. [`encode`]: wit-component turns the module into a component. Any panic in it is caught and
//!    becomes an error.

use std::panic::{AssertUnwindSafe, catch_unwind};

use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use crate::JobError;

/// The WebAssembly features a job may use: WebAssembly 2.0 (mutable globals, sign extension,
/// saturating float-to-int, multi-value, bulk memory, reference types, fixed-width SIMD),
/// extended constant expressions (`i32.add` in a global's initializer: wasi-sdk emits them, so
/// Python components built by componentize-py need them; they compute nothing at run time) and
/// the component model. Everything else is off in the engine and refused at load, naming the
/// feature: multi-memory and memory64 (the memory cap is per job, and these multiply what a job
/// can map), threads and shared memory, GC, function references, exceptions, tail calls, relaxed
/// SIMD (results differ between hosts), custom page sizes, wide arithmetic, stack switching and
/// the async parts of the component model.
/// Reference types come without `externref` and the other GC types: wasmtime is built without
/// its GC, so tables hold `funcref` only.
pub(crate) const JOB_FEATURES: WasmFeatures = WasmFeatures::WASM2
    .union(WasmFeatures::BULK_MEMORY_OPT)
    .union(WasmFeatures::CALL_INDIRECT_OVERLONG)
    .union(WasmFeatures::EXTENDED_CONST)
    .union(WasmFeatures::COMPONENT_MODEL)
    .difference(WasmFeatures::GC_TYPES);

/// What jobs may use, for error messages.
pub(crate) const JOB_FEATURES_TEXT: &str = "jobs may use WebAssembly 2.0 (mutable globals, sign extension, saturating float-to-int, multi-value, bulk memory, reference types without externref, SIMD), extended constant expressions and the component model; multi-memory, memory64, threads, GC, exceptions, tail calls, relaxed SIMD and the other proposals are refused";

/// Sets the engine's features to exactly [`JOB_FEATURES`].
pub(crate) fn configure(config: &mut wasmtime::Config) {
    config
        .wasm_features(WasmFeatures::all().difference(JOB_FEATURES), false)
        .wasm_features(JOB_FEATURES, true);
}

/// The host's copy of the job contract, from `guest-sdk/wit/job.wit`.
pub(crate) struct Contract {
    resolve: wit_parser::Resolve,
    world: wit_parser::WorldId,
}

impl Contract {
    /// Parses the WIT file compiled into the host.
    pub(crate) fn new() -> Result<Self, JobError> {
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve
            .push_source("job.wit", include_str!("../../../guest-sdk/wit/job.wit"))
            .map_err(|e| JobError::Host(format!("the host's WIT is invalid: {e:#}")))?;
        let world = resolve
            .select_world(&[package], Some("job"))
            .map_err(|e| JobError::Host(format!("the host's WIT has no job world: {e:#}")))?;
        Ok(Self { resolve, world })
    }
}

/// The component to compile for the submitted `wasm`: a component as it is, a core module through
/// the four stages above.
pub(crate) fn component_bytes(wasm: &[u8], contract: &Contract) -> Result<Vec<u8>, JobError> {
    match header(wasm)? {
        Kind::Component => Ok(wasm.to_vec()),
        Kind::Module => {
            validate_core(wasm)?;
            check_core_imports(wasm)?;
            let module = with_host_metadata(wasm, contract)?;
            encode(&module)
        }
    }
}

enum Kind {
    Module,
    Component,
}

fn header(wasm: &[u8]) -> Result<Kind, JobError> {
    const MAGIC: &[u8] = b"\0asm";
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        return Err(JobError::InvalidWasm(
            "not a WebAssembly binary (missing the \\0asm header)".into(),
        ));
    }
    // Bytes 4..8: version 1 for core modules, 0x0d + layer 1 for components.
    Ok(if wasm[4..8] == [1, 0, 0, 0] {
        Kind::Module
    } else {
        Kind::Component
    })
}

/// Stage 1: the whole module is valid under [`JOB_FEATURES`].
fn validate_core(wasm: &[u8]) -> Result<(), JobError> {
    Validator::new_with_features(JOB_FEATURES)
        .validate_all(wasm)
        .map(drop)
        .map_err(|e| {
            JobError::InvalidWasm(format!(
                "the module is not valid for this sandbox: {}",
                with_feature_list(&super::first_line(&e.to_string()))
            ))
        })
}

/// `message`, followed by what jobs may use when it is about a feature that is not enabled
/// (wasmparser says "… not enabled", "… must be enabled …" or "multiple memories").
pub(crate) fn with_feature_list(message: &str) -> String {
    if message.contains("enabled") || message.starts_with("multiple ") {
        format!("{message}; {JOB_FEATURES_TEXT}")
    } else {
        message.to_string()
    }
}

/// Stage 2: every import is a `sluice:job` interface at this host's version.
fn check_core_imports(wasm: &[u8]) -> Result<(), JobError> {
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(Payload::ImportSection(imports)) = payload else {
            continue;
        };
        for import in imports.into_imports() {
            let import = import.map_err(|e| JobError::InvalidWasm(e.to_string()))?;
            // Interface imports are named by their module (`wasi:cli/environment@0.2.0`);
            // anything else (`env`, `wasi_snapshot_preview1`) by module and field.
            if import.module.contains(':') {
                super::job_import_allowed(import.module)?;
            } else {
                return Err(JobError::ForbiddenImport(format!(
                    "{}::{}",
                    import.module, import.name
                )));
            }
        }
    }
    Ok(())
}

/// Stage 3: the module with its `component-type` sections replaced by the host's.
fn with_host_metadata(wasm: &[u8], contract: &Contract) -> Result<Vec<u8>, JobError> {
    let mut out = wasm[..8].to_vec();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| JobError::InvalidWasm(e.to_string()))?;
        if let Payload::CustomSection(c) = &payload
            && c.name().starts_with("component-type")
        {
            continue;
        }
        if let Some((id, range)) = payload.as_section() {
            out.push(id);
            leb128_u32(&mut out, range.len());
            out.extend_from_slice(&wasm[range]);
        }
    }
    wit_component::embed_component_metadata(
        &mut out,
        &contract.resolve,
        contract.world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| JobError::Host(format!("cannot embed the job contract: {e:#}")))?;
    Ok(out)
}

fn leb128_u32(out: &mut Vec<u8>, n: usize) {
    let mut n = n as u32;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Stage 4: wit-component's encoding, with any panic turned into an error.
fn encode(module: &[u8]) -> Result<Vec<u8>, JobError> {
    let refused = |why: String| {
        JobError::InvalidWasm(format!(
            "core module could not be turned into a job component ({why}); build jobs with the sluice-guest SDK for wasm32-unknown-unknown"
        ))
    };
    catch_unwind(AssertUnwindSafe(|| {
        wit_component::ComponentEncoder::default()
            .module(module)
            .and_then(|e| e.validate(true).encode())
    }))
    // A panic's message went to the log through the panic hook; the job's author gets a refusal.
    .map_err(|_| refused("the encoder failed on this module".into()))?
    .map_err(|e| refused(super::first_line(&format!("{e:#}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with the given sections after the header.
    fn module(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        for (id, body) in sections {
            m.push(*id);
            leb128_u32(&mut m, body.len());
            m.extend_from_slice(body);
        }
        m
    }

    /// A memory section with `n` memories of `pages` minimum pages each.
    fn memories(n: u8, pages: u8) -> (u8, Vec<u8>) {
        let mut body = vec![n];
        for _ in 0..n {
            body.extend_from_slice(&[0x00, pages]);
        }
        (5, body)
    }

    #[test]
    fn multi_memory_is_refused_naming_the_feature() {
        let err = validate_core(&module(&[memories(2, 1)])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("multiple memories"), "{text}");
        assert!(text.contains("jobs may use WebAssembly 2.0"), "{text}");
        validate_core(&module(&[memories(1, 1)])).expect("one memory is fine");
    }

    #[test]
    fn memory64_and_shared_memory_are_refused() {
        // Flags 0x04: 64-bit index; 0x03: shared with a maximum.
        let m64 = module(&[(5, vec![1, 0x04, 1])]);
        assert!(matches!(validate_core(&m64), Err(JobError::InvalidWasm(_))));
        let shared = module(&[(5, vec![1, 0x03, 1, 2])]);
        assert!(matches!(
            validate_core(&shared),
            Err(JobError::InvalidWasm(_))
        ));
    }

    #[test]
    fn a_truncated_module_is_an_error_not_a_panic() {
        // A code section that announces more bytes than follow.
        let mut m = module(&[(1, vec![1, 0x60, 0, 0]), (3, vec![1, 0])]);
        m.extend_from_slice(&[10, 20, 1, 5, 0]);
        assert!(matches!(
            component_bytes(&m, &Contract::new().unwrap()),
            Err(JobError::InvalidWasm(_))
        ));
    }

    #[test]
    fn imports_outside_the_contract_are_named() {
        // (import "env" "f" (func)) and (import "wasi:cli/environment@0.2.0" "get" (func)).
        let import = |module: &str, field: &str| {
            let mut body = vec![1];
            for s in [module, field] {
                body.push(s.len() as u8);
                body.extend_from_slice(s.as_bytes());
            }
            body.extend_from_slice(&[0x00, 0]);
            module_with_import(body)
        };
        fn module_with_import(imports: Vec<u8>) -> Vec<u8> {
            module(&[(1, vec![1, 0x60, 0, 0]), (2, imports)])
        }
        match check_core_imports(&import("env", "f")) {
            Err(JobError::ForbiddenImport(n)) => assert_eq!(n, "env::f"),
            other => panic!("{other:?}"),
        }
        match check_core_imports(&import("wasi:cli/environment@0.2.0", "get")) {
            Err(JobError::ForbiddenImport(n)) => assert_eq!(n, "wasi:cli/environment@0.2.0"),
            other => panic!("{other:?}"),
        }
        assert!(check_core_imports(&import("sluice:job/log@0.3.0", "log")).is_ok());
    }

    #[test]
    fn the_guests_metadata_is_replaced_by_the_hosts() {
        let contract = Contract::new().unwrap();
        let guest = module(&[(0, {
            let mut b = vec![14];
            b.extend_from_slice(b"component-type");
            b.extend_from_slice(b"\xff\xff untrusted");
            b
        })]);
        let out = with_host_metadata(&guest, &contract).unwrap();
        let customs: Vec<(String, Vec<u8>)> = Parser::new(0)
            .parse_all(&out)
            .filter_map(|p| match p.unwrap() {
                Payload::CustomSection(c) => Some((c.name().to_string(), c.data().to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(customs.len(), 1, "{customs:?}");
        assert_eq!(customs[0].0, "component-type");
        assert!(!customs[0].1.ends_with(b"untrusted"));
    }
}
