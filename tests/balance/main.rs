//! Integration tests for `tower_mesh::balance`.

mod api;
mod churn;
mod readiness;
mod strategies;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_mesh::balance::error::{NoEndpoints, Panic};
use tower_mesh::balance::{
    stable_hash, AnyPick, Balance, BalanceLayer, LeastRequests, Maglev, P2c, PanicMode, Pick,
    Random, RingHash, RoundRobin, SlowStart, Strategy, Weighted,
};

use support::{discovery, poll_once, poll_ready, send, settle, setup, Bal, Echo};

fn counts<P: Pick<u64>>(b: &mut Bal<P>, n: usize) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for r in 0..n {
        *m.entry(send(b, r as u64)).or_default() += 1;
    }
    m
}

fn key_fn(r: &u64) -> Option<u64> {
    Some(stable_hash(r))
}
