//! A small stack, as the SDK's docs advise row-function crates: the memory stays a few pages.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=32768");
}
