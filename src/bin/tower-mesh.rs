//! The `tower-mesh` binary (being written).

fn main() {}
