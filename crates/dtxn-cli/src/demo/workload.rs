//! The workload: the sign-up requests the demo sends, the product catalog
//! they draw from, and the faults some of them inject.
//!
//! Everything here is derived from the `--seed` alone, so a run can be
//! replayed: the same seed gives the same requests, the same products
//! asked for and the same faults on the same requests. (Which of two
//! concurrent requests gets the last unit of a product still depends on
//! timing.)

use std::fmt;
use std::time::Duration;

use dtxn::TransactionId;

/// One of the three services taking part in every sign-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ServiceKind {
    /// Creates the user account.
    Users,
    /// Hands out one unit of the welcome product from the inventory.
    Products,
    /// Records the welcome order.
    Orders,
}

impl ServiceKind {
    /// Every service, in registration order.
    pub const ALL: [Self; 3] = [Self::Users, Self::Products, Self::Orders];

    /// The participant name the coordinator reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "UserService",
            Self::Products => "ProductService",
            Self::Orders => "OrderService",
        }
    }

    /// The service's typical latency per call (each call is jittered into
    /// `[latency/2, 3·latency/2)`).
    pub fn latency(self) -> Duration {
        match self {
            Self::Users => Duration::from_millis(1),
            Self::Products => Duration::from_millis(3),
            Self::Orders => Duration::from_millis(2),
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure a service injects into one transaction.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `prepare` votes to abort as if its storage were unavailable.
    PrepareError,
    /// `prepare` reserves, then panics.
    PreparePanic,
    /// `prepare` reserves, then hangs far beyond the prepare timeout.
    PrepareHang,
    /// The first `commit` fails with a transient error (the retry succeeds).
    CommitTransient,
    /// The first `commit` applies its work, then panics before answering
    /// (a lost acknowledgement; the retry finds the work done).
    CommitPanic,
}

impl FaultKind {
    /// Every fault kind.
    pub const ALL: [Self; 5] = [
        Self::PrepareError,
        Self::PreparePanic,
        Self::PrepareHang,
        Self::CommitTransient,
        Self::CommitPanic,
    ];

    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::PrepareError => "prepare error",
            Self::PreparePanic => "prepare panic",
            Self::PrepareHang => "prepare hang",
            Self::CommitTransient => "commit transient error",
            Self::CommitPanic => "commit panic",
        }
    }

    /// Position in [`FaultKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A fault planned for one transaction: which service misbehaves, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    /// The service that misbehaves.
    pub service: ServiceKind,
    /// How it misbehaves.
    pub kind: FaultKind,
}

/// One "sign up with a free welcome product" request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUp {
    /// The username to create; a few are invalid on purpose.
    pub username: String,
    /// The welcome product asked for, an index into [`CATALOG`].
    pub product: usize,
    /// The fault this request injects, if any.
    pub fault: Option<Fault>,
}

/// A product of the welcome catalog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Product {
    /// Its name.
    pub name: &'static str,
    /// The share of sign-ups asking for it.
    pub demand: f64,
    /// Initial stock as a share of the number of transactions. Below
    /// `demand`, the product runs out during the run.
    pub stock_share: f64,
}

/// The welcome products: two plentiful ones and two limited editions that
/// run out (about 7 % of the sign-ups find their product out of stock).
pub const CATALOG: [Product; 4] = [
    Product {
        name: "welcome-mug",
        demand: 0.45,
        stock_share: 0.60,
    },
    Product {
        name: "sticker-pack",
        demand: 0.40,
        stock_share: 0.60,
    },
    Product {
        name: "tote-bag",
        demand: 0.10,
        stock_share: 0.06,
    },
    Product {
        name: "hoodie",
        demand: 0.05,
        stock_share: 0.02,
    },
];

/// Share of requests with an invalid username.
const INVALID_USER_RATE: f64 = 0.02;

/// Invalid usernames the workload sends (empty, or blocked by the user
/// service).
const INVALID_USERNAMES: [&str; 3] = ["", "root", "admin"];

/// The requests of one run and the initial inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The requests, in submission order.
    pub signups: Vec<SignUp>,
    /// Initial stock per product of [`CATALOG`].
    pub stock: Vec<u64>,
}

impl Workload {
    /// Generates `transactions` requests. Each injects a fault with
    /// probability `fault_rate` (kind and service chosen uniformly).
    pub fn generate(transactions: usize, fault_rate: f64, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let signups = (0..transactions)
            .map(|i| {
                draw(
                    &mut rng,
                    || format!("user-{i:06}"),
                    fault_rate,
                    &FaultKind::ALL,
                )
            })
            .collect();
        Self {
            signups,
            stock: stock_for(transactions),
        }
    }
}

/// The initial stock per product of [`CATALOG`] for a run of about
/// `transactions` sign-ups: the limited products run out.
pub fn stock_for(transactions: usize) -> Vec<u64> {
    CATALOG
        .iter()
        .map(|p| (transactions as f64 * p.stock_share).ceil().max(1.0) as u64)
        .collect()
}

/// The request of `txn` derived from `seed` and the transaction id alone,
/// with the demo's mix of invalid usernames and products; it injects a
/// fault with probability `fault_rate`, on a service chosen uniformly, of
/// a kind chosen uniformly from `fault_kinds` (never if it is empty).
/// Standalone services (`dtxn service`) started with the same settings
/// derive the same request for the same transaction.
pub fn derive_signup(
    txn: TransactionId,
    seed: u64,
    fault_rate: f64,
    fault_kinds: &[FaultKind],
) -> SignUp {
    let id = txn.as_u128();
    let (high, low) = ((id >> 64) as u64, id as u64);
    let mixed = seed
        ^ low.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ high.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut rng = fastrand::Rng::with_seed(mixed);
    draw(&mut rng, || format!("user-{txn}"), fault_rate, fault_kinds)
}

/// Draws one request from `rng`; `username` names a valid one.
fn draw(
    rng: &mut fastrand::Rng,
    username: impl FnOnce() -> String,
    fault_rate: f64,
    fault_kinds: &[FaultKind],
) -> SignUp {
    let username = if rng.f64() < INVALID_USER_RATE {
        INVALID_USERNAMES[rng.usize(..INVALID_USERNAMES.len())].to_owned()
    } else {
        username()
    };
    let product = pick_product(rng.f64());
    let fault = (!fault_kinds.is_empty() && rng.f64() < fault_rate).then(|| Fault {
        service: ServiceKind::ALL[rng.usize(..ServiceKind::ALL.len())],
        kind: fault_kinds[rng.usize(..fault_kinds.len())],
    });
    SignUp {
        username,
        product,
        fault,
    }
}

/// Maps a uniform sample in `[0, 1)` to a product by demand.
fn pick_product(sample: f64) -> usize {
    let mut cumulative = 0.0;
    for (i, product) in CATALOG.iter().enumerate() {
        cumulative += product.demand;
        if sample < cumulative {
            return i;
        }
    }
    CATALOG.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_workload() {
        assert_eq!(
            Workload::generate(500, 0.1, 42),
            Workload::generate(500, 0.1, 42)
        );
        assert_ne!(
            Workload::generate(500, 0.1, 42),
            Workload::generate(500, 0.1, 43)
        );
    }

    #[test]
    fn fault_rate_bounds() {
        let none = Workload::generate(1000, 0.0, 1);
        assert!(none.signups.iter().all(|s| s.fault.is_none()));
        let all = Workload::generate(1000, 1.0, 1);
        assert!(all.signups.iter().all(|s| s.fault.is_some()));
    }

    #[test]
    fn derived_requests_depend_on_seed_and_transaction_only() {
        let txn = |n: u128| TransactionId::from_u128(0x7f3a_0000_0000_0000_0000_0000_0000_0000 + n);
        let kinds = [FaultKind::CommitPanic];
        let a: Vec<SignUp> = (0..200)
            .map(|n| derive_signup(txn(n), 9, 0.5, &kinds))
            .collect();
        let b: Vec<SignUp> = (0..200)
            .map(|n| derive_signup(txn(n), 9, 0.5, &kinds))
            .collect();
        assert_eq!(a, b);
        let other_seed: Vec<SignUp> = (0..200)
            .map(|n| derive_signup(txn(n), 10, 0.5, &kinds))
            .collect();
        assert_ne!(a, other_seed);
        let faults = a.iter().filter_map(|s| s.fault).collect::<Vec<_>>();
        assert!(faults.iter().all(|f| f.kind == FaultKind::CommitPanic));
        assert!((50..150).contains(&faults.len()), "{} faults", faults.len());
        assert!((0..200).all(|n| derive_signup(txn(n), 9, 1.0, &[]).fault.is_none()));
        let products: std::collections::HashSet<usize> = a.iter().map(|s| s.product).collect();
        assert!(products.len() > 1, "products vary");
    }

    #[test]
    fn demand_covers_the_catalog() {
        let total: f64 = CATALOG.iter().map(|p| p.demand).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(pick_product(0.0), 0);
        assert_eq!(pick_product(0.999_999), CATALOG.len() - 1);
    }
}
