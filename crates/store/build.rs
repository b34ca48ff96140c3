//! Rebuild when a migration is added or edited: they are embedded at compile time.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
