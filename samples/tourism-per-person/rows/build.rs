//! A row function runs in a fresh instance per privacy unit, and an instance's memory is reset
//! when it is freed: a 32 KiB stack (rustc's default for wasm is 1 MiB) keeps the whole memory a
//! few pages, which the engine resets with a `memset`.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=32768");
}
