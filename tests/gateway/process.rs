//! The `tower-mesh` binary as a process.
