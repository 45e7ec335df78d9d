//! The three in-process services of the demo and their in-memory stores.
//!
//! Each service is a [`Service`] around a [`Store`]: the store is plain,
//! synchronous data behind a `std` mutex (never held across an `.await`),
//! the service adds the latency of a remote call, the fault injection and
//! the [`Participant`] protocol:
//!
//! * `prepare` validates the request and *reserves* (a username, a unit of
//!   stock, a pending order), or votes to abort holding nothing;
//! * `commit` *applies* the reservation, idempotently (a repeated commit of
//!   an applied transaction succeeds);
//! * `rollback` *releases* the reservation, idempotently, and accepts
//!   transactions it never saw.
//!
//! A rolled-back transaction is remembered (a tombstone), so a `prepare`
//! that arrives after its `rollback` — possible over HTTP, where the
//! service finishes a call the coordinator already gave up on — votes to
//! abort instead of reserving for a transaction nobody will finish.
//!
//! A service learns what a transaction asks for from its [`Requests`]: in
//! the demo, the shared [`RequestBook`], filled by the client after
//! `begin_transaction` and before `prepare_transaction`; as a standalone
//! service (`dtxn service`), [`DerivedRequests`], which derives the request
//! from the transaction id so that separate processes agree on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
use serde::Serialize;

use super::workload::{derive_signup, Fault, FaultKind, ServiceKind, SignUp, CATALOG};

/// How many pending reservations a [`ServiceState`] lists by transaction.
const MAX_LISTED_RESERVATIONS: usize = 100;

/// Marks every injected failure. Injected panic messages start with it, so
/// the demo's panic hook can keep them off the terminal.
pub const INJECTED: &str = "injected fault";

/// How long an injected hang lasts: far beyond any sane prepare timeout.
pub(crate) const HANG: Duration = Duration::from_secs(3600);

/// Locks `mutex`, ignoring poisoning: no code panics while holding these
/// locks (injected panics happen after they are released), and every store
/// operation leaves its data consistent before returning.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sleeps for about `latency` (uniformly in `[latency/2, 3·latency/2)`).
async fn simulate_latency(latency: Duration) {
    tokio::time::sleep(latency.mul_f64(0.5 + fastrand::f64())).await;
}

/// Where a service learns what a transaction asks for and which fault it
/// injects.
pub trait Requests: Send + Sync + std::fmt::Debug + 'static {
    /// The request of `txn`, if known.
    fn request(&self, txn: TransactionId) -> Option<SignUp>;

    /// Whether `service` must inject `kind` into `txn` now. A fault fires
    /// once: taking it again answers `false`.
    fn take_fault(&self, txn: TransactionId, service: ServiceKind, kind: FaultKind) -> bool;

    /// How many faults of each kind were injected so far.
    fn injected(&self) -> BTreeMap<&'static str, usize>;
}

/// Counts injected faults by kind.
#[derive(Debug, Default)]
pub(crate) struct FaultTally([AtomicUsize; FaultKind::ALL.len()]);

impl FaultTally {
    /// Counts one injected fault of `kind`.
    pub(crate) fn record(&self, kind: FaultKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// How many faults of each kind were injected so far.
    pub(crate) fn counts(&self) -> BTreeMap<&'static str, usize> {
        FaultKind::ALL
            .iter()
            .map(|k| (k.label(), self.0[k.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

/// The requests of the transactions in flight, keyed by transaction, and a
/// tally of the faults actually injected.
#[derive(Debug, Default)]
pub struct RequestBook {
    requests: Mutex<HashMap<TransactionId, SignUp>>,
    injected: FaultTally,
}

impl RequestBook {
    /// Files the request of `txn` (before it is prepared).
    pub fn insert(&self, txn: TransactionId, request: SignUp) {
        lock(&self.requests).insert(txn, request);
    }

    /// Forgets the request of `txn` (once it is finished).
    pub fn remove(&self, txn: TransactionId) {
        lock(&self.requests).remove(&txn);
    }
}

impl Requests for RequestBook {
    fn request(&self, txn: TransactionId) -> Option<SignUp> {
        lock(&self.requests).get(&txn).cloned()
    }

    /// The fault is removed from the filed request when taken.
    fn take_fault(&self, txn: TransactionId, service: ServiceKind, kind: FaultKind) -> bool {
        let taken = lock(&self.requests)
            .get_mut(&txn)
            .and_then(|request| {
                request
                    .fault
                    .take_if(|f| f.service == service && f.kind == kind)
            })
            .is_some();
        if taken {
            self.injected.record(kind);
        }
        taken
    }

    fn injected(&self) -> BTreeMap<&'static str, usize> {
        self.injected.counts()
    }
}

/// Requests derived from the transaction id alone (see
/// [`derive_signup`]): services in separate processes started with the
/// same seed and fault settings agree on every transaction's request and
/// fault without talking to each other.
#[derive(Debug)]
pub struct DerivedRequests {
    seed: u64,
    fault_rate: f64,
    fault_kinds: Vec<FaultKind>,
    /// Transactions whose fault already fired.
    fired: Mutex<HashSet<TransactionId>>,
    injected: FaultTally,
}

impl DerivedRequests {
    /// Requests derived with `seed`; each transaction injects a fault with
    /// probability `fault_rate`, of a kind drawn from `fault_kinds` (none
    /// if it is empty).
    pub fn new(seed: u64, fault_rate: f64, fault_kinds: Vec<FaultKind>) -> Self {
        Self {
            seed,
            fault_rate,
            fault_kinds,
            fired: Mutex::new(HashSet::new()),
            injected: FaultTally::default(),
        }
    }
}

impl Requests for DerivedRequests {
    fn request(&self, txn: TransactionId) -> Option<SignUp> {
        Some(derive_signup(
            txn,
            self.seed,
            self.fault_rate,
            &self.fault_kinds,
        ))
    }

    fn take_fault(&self, txn: TransactionId, service: ServiceKind, kind: FaultKind) -> bool {
        let planned = derive_signup(txn, self.seed, self.fault_rate, &self.fault_kinds).fault;
        if planned != Some(Fault { service, kind }) || !lock(&self.fired).insert(txn) {
            return false;
        }
        self.injected.record(kind);
        true
    }

    fn injected(&self) -> BTreeMap<&'static str, usize> {
        self.injected.counts()
    }
}

/// The synchronous state of one service: reserve, apply, release.
pub trait Store: Send + 'static {
    /// Which service this store belongs to.
    const SERVICE: ServiceKind;

    /// Validates `request` and reserves what `txn` needs. `Err(reason)`
    /// means the request is refused and nothing is held. Reserving again
    /// for a transaction that already holds its reservation succeeds.
    fn reserve(&mut self, txn: TransactionId, request: &SignUp) -> Result<(), String>;

    /// Applies the reservation of `txn`. Succeeds if it was applied before;
    /// `Err` if `txn` holds no reservation and was never applied (a
    /// protocol violation).
    fn apply(&mut self, txn: TransactionId) -> Result<(), String>;

    /// Releases the reservation of `txn`, if any. `Err` if `txn` was
    /// applied (a protocol violation: rollback after commit).
    fn release(&mut self, txn: TransactionId) -> Result<(), String>;

    /// What the store holds, for inspection (`GET /state`).
    type State: Serialize + Send;

    /// The store's contents as [`Self::State`].
    fn state(&self) -> Self::State;
}

/// The store and the transactions rolled back, under one lock so that a
/// late `prepare` and its `rollback` cannot interleave.
#[derive(Debug)]
struct Ledger<S> {
    store: S,
    rolled_back: HashSet<TransactionId>,
}

/// A service's state for inspection: its store and its bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState<T> {
    /// The participant name.
    pub service: &'static str,
    /// The store.
    pub store: T,
    /// Transactions rolled back (remembered so a late prepare aborts).
    pub rolled_back: usize,
    /// Faults injected so far, by kind.
    pub faults_injected: BTreeMap<&'static str, usize>,
    /// Protocol violations seen (commit without reservation, rollback
    /// after commit); empty in a correct run.
    pub anomalies: Vec<String>,
}

/// Pending reservations: how many, and the first transactions holding one
/// (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservations {
    /// Reservations held.
    pub count: usize,
    /// The transactions holding them (at most 100 listed).
    pub transactions: Vec<TransactionId>,
}

impl Reservations {
    fn of<'a>(holders: impl Iterator<Item = &'a TransactionId>) -> Self {
        let mut transactions: Vec<TransactionId> = holders.copied().collect();
        transactions.sort_unstable_by_key(|txn| txn.as_u128());
        let count = transactions.len();
        transactions.truncate(MAX_LISTED_RESERVATIONS);
        Self {
            count,
            transactions,
        }
    }
}

/// A service: a [`Store`] behind a mutex, reachable as a [`Participant`].
#[derive(Debug)]
pub struct Service<S> {
    ledger: Mutex<Ledger<S>>,
    book: Arc<dyn Requests>,
    /// Protocol violations seen by this service (commit without
    /// reservation, rollback after commit).
    anomalies: Mutex<Vec<String>>,
}

impl<S: Store + Clone> Service<S> {
    /// A service over `store`, reading requests from `book`.
    pub fn new(store: S, book: Arc<dyn Requests>) -> Self {
        Self {
            ledger: Mutex::new(Ledger {
                store,
                rolled_back: HashSet::new(),
            }),
            book,
            anomalies: Mutex::new(Vec::new()),
        }
    }

    /// A copy of the store, for the consistency check.
    pub fn snapshot(&self) -> S {
        lock(&self.ledger).store.clone()
    }

    /// The service's state, for inspection.
    pub fn state(&self) -> ServiceState<S::State> {
        let (store, rolled_back) = {
            let ledger = lock(&self.ledger);
            (ledger.store.state(), ledger.rolled_back.len())
        };
        ServiceState {
            service: S::SERVICE.name(),
            store,
            rolled_back,
            faults_injected: self.book.injected(),
            anomalies: self.anomalies(),
        }
    }

    /// The protocol violations this service saw.
    pub fn anomalies(&self) -> Vec<String> {
        lock(&self.anomalies).clone()
    }

    fn anomaly(&self, txn: TransactionId, what: &str) -> ParticipantError {
        let message = format!("{}: {what} (transaction {txn})", S::SERVICE);
        tracing::error!(%txn, service = %S::SERVICE, "{what}");
        lock(&self.anomalies).push(message.clone());
        ParticipantError::permanent(message)
    }
}

#[async_trait]
impl<S: Store + Clone> Participant for Service<S> {
    fn name(&self) -> &str {
        S::SERVICE.name()
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        simulate_latency(S::SERVICE.latency()).await;
        let Some(request) = self.book.request(txn) else {
            return PreparedResult::Aborted("unknown request".to_owned());
        };
        if self
            .book
            .take_fault(txn, S::SERVICE, FaultKind::PrepareError)
        {
            return PreparedResult::Aborted(format!("{INJECTED}: storage unavailable"));
        }
        let reserved = {
            let mut ledger = lock(&self.ledger);
            if ledger.rolled_back.contains(&txn) {
                Err("already rolled back".to_owned())
            } else {
                ledger.store.reserve(txn, &request)
            }
        };
        if let Err(reason) = reserved {
            return PreparedResult::Aborted(reason);
        }
        // These two fire while holding the reservation: the coordinator
        // must roll it back although it never saw a vote.
        if self
            .book
            .take_fault(txn, S::SERVICE, FaultKind::PreparePanic)
        {
            panic!("{INJECTED}: panic in prepare");
        }
        if self
            .book
            .take_fault(txn, S::SERVICE, FaultKind::PrepareHang)
        {
            tokio::time::sleep(HANG).await;
        }
        PreparedResult::Ready
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        simulate_latency(S::SERVICE.latency()).await;
        if self
            .book
            .take_fault(txn, S::SERVICE, FaultKind::CommitTransient)
        {
            return Err(ParticipantError::transient(format!(
                "{INJECTED}: write conflict, retry"
            )));
        }
        let applied = lock(&self.ledger).store.apply(txn);
        if let Err(what) = applied {
            return Err(self.anomaly(txn, &what));
        }
        if self
            .book
            .take_fault(txn, S::SERVICE, FaultKind::CommitPanic)
        {
            panic!("{INJECTED}: panic in commit after applying");
        }
        Ok(())
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        simulate_latency(S::SERVICE.latency() / 2).await;
        let released = {
            let mut ledger = lock(&self.ledger);
            ledger.rolled_back.insert(txn);
            ledger.store.release(txn)
        };
        released.map_err(|what| self.anomaly(txn, &what))
    }
}

/// Usernames the user service refuses.
pub(crate) const BLOCKED_USERNAMES: [&str; 3] = ["root", "admin", "system"];

/// The user service's store: accounts and pending sign-ups.
#[derive(Debug, Clone, Default)]
pub struct UserStore {
    /// Committed accounts: username → the transaction that created it.
    pub users: HashMap<String, TransactionId>,
    /// Committed accounts by creating transaction (the applied set).
    pub created: HashMap<TransactionId, String>,
    /// Reserved usernames by transaction.
    pub pending: HashMap<TransactionId, String>,
    /// Reserved usernames, so two sign-ups cannot reserve the same name.
    pub reserved_names: HashSet<String>,
}

/// The user service.
pub type UserService = Service<UserStore>;

/// [`UserStore`] as shown by `GET /state`.
#[derive(Debug, Clone, Serialize)]
pub struct UserState {
    /// Committed accounts.
    pub users: usize,
    /// Reserved usernames.
    pub reservations: Reservations,
}

impl Store for UserStore {
    const SERVICE: ServiceKind = ServiceKind::Users;
    type State = UserState;

    fn state(&self) -> UserState {
        UserState {
            users: self.users.len(),
            reservations: Reservations::of(self.pending.keys()),
        }
    }

    fn reserve(&mut self, txn: TransactionId, request: &SignUp) -> Result<(), String> {
        let name = request.username.as_str();
        if name.is_empty() {
            return Err("invalid user (empty username)".to_owned());
        }
        if BLOCKED_USERNAMES.contains(&name) {
            return Err(format!("invalid user (blocked username {name:?})"));
        }
        if self.pending.contains_key(&txn) || self.created.contains_key(&txn) {
            return Ok(());
        }
        if self.users.contains_key(name) || self.reserved_names.contains(name) {
            return Err(format!("username taken ({name:?})"));
        }
        self.reserved_names.insert(name.to_owned());
        self.pending.insert(txn, name.to_owned());
        Ok(())
    }

    fn apply(&mut self, txn: TransactionId) -> Result<(), String> {
        if let Some(name) = self.pending.remove(&txn) {
            self.reserved_names.remove(&name);
            self.users.insert(name.clone(), txn);
            self.created.insert(txn, name);
            Ok(())
        } else if self.created.contains_key(&txn) {
            Ok(())
        } else {
            Err("commit without a reserved username".to_owned())
        }
    }

    fn release(&mut self, txn: TransactionId) -> Result<(), String> {
        if let Some(name) = self.pending.remove(&txn) {
            self.reserved_names.remove(&name);
        } else if self.created.contains_key(&txn) {
            return Err("rollback of a committed account".to_owned());
        }
        Ok(())
    }
}

/// One product's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLine {
    /// The product's name.
    pub name: &'static str,
    /// Units at the start of the run.
    pub initial: u64,
    /// Units neither reserved nor given out.
    pub on_hand: u64,
}

/// The product service's store: the inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Stock per product, indexed like [`CATALOG`].
    pub lines: Vec<StockLine>,
    /// Units reserved, by transaction (product index).
    pub reserved: HashMap<TransactionId, usize>,
    /// Units given out, by transaction (product index; the applied set).
    pub given: HashMap<TransactionId, usize>,
}

impl Inventory {
    /// An inventory of [`CATALOG`] with `stock[i]` units of product `i`.
    pub fn new(stock: &[u64]) -> Self {
        let lines = CATALOG
            .iter()
            .zip(stock)
            .map(|(product, &units)| StockLine {
                name: product.name,
                initial: units,
                on_hand: units,
            })
            .collect();
        Self {
            lines,
            reserved: HashMap::new(),
            given: HashMap::new(),
        }
    }
}

/// The product (inventory) service.
pub type ProductService = Service<Inventory>;

/// One product in an [`InventoryState`].
#[derive(Debug, Clone, Serialize)]
pub struct ProductState {
    /// The product's name.
    pub name: &'static str,
    /// Units at the start.
    pub initial: u64,
    /// Units neither reserved nor given out.
    pub on_hand: u64,
    /// Units given out.
    pub given: usize,
}

/// [`Inventory`] as shown by `GET /state`.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryState {
    /// Stock per product.
    pub products: Vec<ProductState>,
    /// Units given out, over all products.
    pub units_given: usize,
    /// Reserved units.
    pub reservations: Reservations,
}

impl Store for Inventory {
    const SERVICE: ServiceKind = ServiceKind::Products;
    type State = InventoryState;

    fn state(&self) -> InventoryState {
        let products = self
            .lines
            .iter()
            .enumerate()
            .map(|(index, line)| ProductState {
                name: line.name,
                initial: line.initial,
                on_hand: line.on_hand,
                given: self.given.values().filter(|&&p| p == index).count(),
            })
            .collect();
        InventoryState {
            products,
            units_given: self.given.len(),
            reservations: Reservations::of(self.reserved.keys()),
        }
    }

    fn reserve(&mut self, txn: TransactionId, request: &SignUp) -> Result<(), String> {
        if self.reserved.contains_key(&txn) || self.given.contains_key(&txn) {
            return Ok(());
        }
        let Some(line) = self.lines.get_mut(request.product) else {
            return Err(format!("unknown product (#{})", request.product));
        };
        if line.on_hand == 0 {
            return Err(format!("out of stock ({})", line.name));
        }
        line.on_hand -= 1;
        self.reserved.insert(txn, request.product);
        Ok(())
    }

    fn apply(&mut self, txn: TransactionId) -> Result<(), String> {
        if let Some(product) = self.reserved.remove(&txn) {
            self.given.insert(txn, product);
            Ok(())
        } else if self.given.contains_key(&txn) {
            Ok(())
        } else {
            Err("commit without a reserved unit".to_owned())
        }
    }

    fn release(&mut self, txn: TransactionId) -> Result<(), String> {
        if let Some(product) = self.reserved.remove(&txn) {
            if let Some(line) = self.lines.get_mut(product) {
                line.on_hand += 1;
            }
        } else if self.given.contains_key(&txn) {
            return Err("rollback of a unit already given out".to_owned());
        }
        Ok(())
    }
}

/// A welcome order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Who it is for.
    pub username: String,
    /// What it contains (an index into [`CATALOG`]).
    pub product: usize,
}

/// The order service's store.
#[derive(Debug, Clone, Default)]
pub struct OrderBook {
    /// Committed orders by transaction (the applied set).
    pub orders: HashMap<TransactionId, Order>,
    /// Pending orders by transaction.
    pub pending: HashMap<TransactionId, Order>,
}

/// The order service.
pub type OrderService = Service<OrderBook>;

/// [`OrderBook`] as shown by `GET /state`.
#[derive(Debug, Clone, Serialize)]
pub struct OrderState {
    /// Committed orders.
    pub orders: usize,
    /// Pending orders.
    pub reservations: Reservations,
}

impl Store for OrderBook {
    const SERVICE: ServiceKind = ServiceKind::Orders;
    type State = OrderState;

    fn state(&self) -> OrderState {
        OrderState {
            orders: self.orders.len(),
            reservations: Reservations::of(self.pending.keys()),
        }
    }

    fn reserve(&mut self, txn: TransactionId, request: &SignUp) -> Result<(), String> {
        if !self.orders.contains_key(&txn) {
            self.pending.entry(txn).or_insert_with(|| Order {
                username: request.username.clone(),
                product: request.product,
            });
        }
        Ok(())
    }

    fn apply(&mut self, txn: TransactionId) -> Result<(), String> {
        if let Some(order) = self.pending.remove(&txn) {
            self.orders.insert(txn, order);
            Ok(())
        } else if self.orders.contains_key(&txn) {
            Ok(())
        } else {
            Err("commit without a pending order".to_owned())
        }
    }

    fn release(&mut self, txn: TransactionId) -> Result<(), String> {
        if self.pending.remove(&txn).is_none() && self.orders.contains_key(&txn) {
            return Err("rollback of a committed order".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(n: u128) -> TransactionId {
        TransactionId::from_u128(n)
    }

    fn signup(username: &str, product: usize) -> SignUp {
        SignUp {
            username: username.to_owned(),
            product,
            fault: None,
        }
    }

    #[test]
    fn users_reserve_apply_release() {
        let mut s = UserStore::default();
        assert!(s.reserve(txn(1), &signup("", 0)).is_err());
        assert!(s.reserve(txn(1), &signup("root", 0)).is_err());
        s.reserve(txn(1), &signup("alice", 0)).unwrap();
        assert!(s.reserve(txn(2), &signup("alice", 0)).is_err());
        s.apply(txn(1)).unwrap();
        s.apply(txn(1)).unwrap();
        assert!(s.release(txn(1)).is_err());
        assert!(s.reserve(txn(3), &signup("alice", 0)).is_err());
        s.reserve(txn(4), &signup("bob", 0)).unwrap();
        s.release(txn(4)).unwrap();
        s.release(txn(4)).unwrap();
        s.release(txn(99)).unwrap();
        assert!(s.apply(txn(4)).is_err());
        assert!(s.pending.is_empty() && s.reserved_names.is_empty());
        assert_eq!(s.users.len(), 1);
    }

    #[test]
    fn inventory_conserves_units() {
        let mut inv = Inventory::new(&[1, 0, 0, 0]);
        assert!(inv.reserve(txn(1), &signup("a", 1)).is_err());
        inv.reserve(txn(1), &signup("a", 0)).unwrap();
        assert!(inv.reserve(txn(2), &signup("b", 0)).is_err());
        inv.release(txn(1)).unwrap();
        inv.reserve(txn(2), &signup("b", 0)).unwrap();
        inv.apply(txn(2)).unwrap();
        inv.apply(txn(2)).unwrap();
        assert!(inv.release(txn(2)).is_err());
        assert_eq!(inv.lines[0].on_hand, 0);
        assert_eq!(inv.given.len(), 1);
        assert!(inv.reserved.is_empty());
    }

    #[test]
    fn orders_apply_once() {
        let mut book = OrderBook::default();
        book.reserve(txn(1), &signup("a", 2)).unwrap();
        book.apply(txn(1)).unwrap();
        book.apply(txn(1)).unwrap();
        assert!(book.apply(txn(2)).is_err());
        book.reserve(txn(3), &signup("c", 0)).unwrap();
        book.release(txn(3)).unwrap();
        assert_eq!(book.orders.len(), 1);
        assert!(book.pending.is_empty());
    }

    #[test]
    fn faults_fire_once_for_their_service() {
        let book = RequestBook::default();
        let mut request = signup("a", 0);
        request.fault = Some(super::super::workload::Fault {
            service: ServiceKind::Orders,
            kind: FaultKind::CommitTransient,
        });
        book.insert(txn(1), request);
        assert!(!book.take_fault(txn(1), ServiceKind::Users, FaultKind::CommitTransient));
        assert!(!book.take_fault(txn(1), ServiceKind::Orders, FaultKind::CommitPanic));
        assert!(book.take_fault(txn(1), ServiceKind::Orders, FaultKind::CommitTransient));
        assert!(!book.take_fault(txn(1), ServiceKind::Orders, FaultKind::CommitTransient));
        assert_eq!(book.injected()["commit transient error"], 1);
    }

    #[test]
    fn derived_faults_fire_once_for_their_service() {
        let requests = DerivedRequests::new(4, 1.0, vec![FaultKind::CommitTransient]);
        let fault = requests
            .request(txn(7))
            .and_then(|r| r.fault)
            .expect("a fault rate of 1 plans a fault");
        assert_eq!(fault.kind, FaultKind::CommitTransient);
        let other = ServiceKind::ALL
            .into_iter()
            .find(|&s| s != fault.service)
            .unwrap();
        assert!(!requests.take_fault(txn(7), other, FaultKind::CommitTransient));
        assert!(!requests.take_fault(txn(7), fault.service, FaultKind::CommitPanic));
        assert!(requests.take_fault(txn(7), fault.service, FaultKind::CommitTransient));
        assert!(!requests.take_fault(txn(7), fault.service, FaultKind::CommitTransient));
        assert_eq!(requests.injected()["commit transient error"], 1);
        // The request itself does not change when its fault fires.
        assert_eq!(requests.request(txn(7)).and_then(|r| r.fault), Some(fault));
    }

    #[tokio::test(start_paused = true)]
    async fn a_prepare_after_its_rollback_votes_to_abort_and_holds_nothing() {
        let book = Arc::new(RequestBook::default());
        book.insert(txn(1), signup("alice", 0));
        book.insert(txn(2), signup("bob", 0));
        let users = UserService::new(UserStore::default(), book);
        // Over HTTP a rollback can overtake the prepare it follows.
        users.rollback(txn(1)).await.unwrap();
        assert_eq!(
            users.prepare(txn(1)).await,
            PreparedResult::Aborted("already rolled back".to_owned())
        );
        assert!(users.snapshot().pending.is_empty());
        assert_eq!(users.prepare(txn(2)).await, PreparedResult::Ready);
        let state = users.state();
        assert_eq!(state.rolled_back, 1);
        assert_eq!(state.store.reservations.count, 1);
        assert_eq!(state.store.reservations.transactions, vec![txn(2)]);
    }
}
