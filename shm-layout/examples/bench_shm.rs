#![cfg(not(loom))]
#[cfg(not(loom))]
fn main() {}
#[cfg(loom)]
fn main() {}
