//! `embed_migrations!` (src/db.rs) reads `migrations/` while the crate
//! compiles, but cargo watches only the crate's own sources: without this a
//! new or edited migration is left out of the binaries until some `.rs`
//! file happens to change, and `worker --migrate` quietly applies the old
//! set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Declaring one path turns off cargo's default of watching the whole
    // package; the sources stay watched as the crate's own inputs.
}
