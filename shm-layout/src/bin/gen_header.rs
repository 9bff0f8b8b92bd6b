//! Prints the C header generated from the Rust layout:
//! `cargo run -p marllb-shm --bin marllb-shm-header > shm-layout/include/marllb_shm.h`.

#[cfg(not(loom))]
fn main() {
    print!("{}", marllb_shm::cheader::c_header());
}

#[cfg(loom)]
fn main() {}
