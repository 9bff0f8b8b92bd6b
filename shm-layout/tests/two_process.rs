#![cfg(not(loom))]

