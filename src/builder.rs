//! [`ServiceBuilderExt`]: tower-mesh's layers as `ServiceBuilder` methods.
//!
//! ```
//! # #[cfg(all(feature = "breaker", feature = "balance"))]
//! # {
//! use tower::ServiceBuilder;
//! use tower_mesh::balance::{BalanceLayer, RoundRobin};
//! use tower_mesh::breaker::CircuitBreakerLayer;
//! use tower_mesh::ServiceBuilderExt;
//!
//! let stack = ServiceBuilder::new()
//!     .circuit_breaker(CircuitBreakerLayer::builder().build().unwrap())
//!     .balance(BalanceLayer::new(RoundRobin::new()));
//! # drop(stack);
//! # }
//! ```

#[allow(unused_imports)]
use tower::layer::util::Stack;
use tower::ServiceBuilder;

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}

/// Extends [`ServiceBuilder`] with one method per tower-mesh layer. Sealed: implemented for
/// `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Adds a service-level [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer):
    /// calls fail fast with a typed `breaker::error::Error::Open` while the breaker is open.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    fn circuit_breaker<C>(
        self,
        layer: crate::breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::breaker::CircuitBreakerLayer<C>, L>>;

    /// Adds a [`BalanceLayer`](crate::balance::BalanceLayer): the service below is a
    /// `Discover` of endpoints, and requests go to the endpoint the strategy picks.
    #[cfg(feature = "balance")]
    #[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
    fn balance<P>(
        self,
        layer: crate::balance::BalanceLayer<P>,
    ) -> ServiceBuilder<Stack<crate::balance::BalanceLayer<P>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "balance")]
    fn balance<P>(
        self,
        layer: crate::balance::BalanceLayer<P>,
    ) -> ServiceBuilder<Stack<crate::balance::BalanceLayer<P>, L>> {
        self.layer(layer)
    }
}
