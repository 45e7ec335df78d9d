//! The consistency check run once every transaction has finished: do the
//! three stores agree with each other and with the coordinator's outcomes?

use std::collections::{HashMap, HashSet};

use dtxn::TransactionId;

use super::services::{Inventory, OrderBook, UserStore};
use super::{TxnRecord, TxnResult};

/// At most this many violations are listed; the rest are counted.
const MAX_LISTED: usize = 50;

/// The stores after the run, and the protocol anomalies the services saw.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The user service's store.
    pub users: UserStore,
    /// The product service's store.
    pub inventory: Inventory,
    /// The order service's store.
    pub orders: OrderBook,
    /// Protocol violations reported by the services themselves.
    pub anomalies: Vec<String>,
}

/// Totals of the stores, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreTotals {
    /// User accounts.
    pub users: usize,
    /// Orders.
    pub orders: usize,
    /// Units of product given out.
    pub units_given: u64,
    /// Units in stock at the start.
    pub initial_stock: u64,
    /// Units in stock at the end.
    pub remaining_stock: u64,
}

/// The result of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Everything found wrong; empty when consistent.
    pub violations: Vec<String>,
    /// Store totals.
    pub totals: StoreTotals,
}

impl Check {
    /// Whether no violation was found.
    pub fn consistent(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Collects violations, listing the first [`MAX_LISTED`].
#[derive(Default)]
struct Violations {
    listed: Vec<String>,
    total: usize,
}

impl Violations {
    fn push(&mut self, violation: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(violation);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.total > self.listed.len() {
            let more = self.total - self.listed.len();
            self.listed.push(format!("... and {more} more"));
        }
        self.listed
    }
}

/// Checks the stores against the outcomes in `records`; `unfinished` is
/// the coordinator's count of unfinished transactions.
///
/// * every transaction finished, and the coordinator has none unfinished;
/// * a committed transaction created exactly one user, one order and took
///   one unit of the ordered product, all for the same user and product;
///   an aborted one none of these;
/// * the committed count equals the number of users, orders and units
///   given, and every user with an order has exactly one order;
/// * inventory is conserved: initial = remaining + units given, per product;
/// * no reservation is left in any store, and no service saw a protocol
///   violation.
pub fn check(records: &[TxnRecord], stores: &Stores, unfinished: usize) -> Check {
    let Stores {
        users,
        inventory,
        orders,
        anomalies,
    } = stores;
    let mut v = Violations::default();

    if unfinished != 0 {
        v.push(format!(
            "the coordinator still has {unfinished} unfinished transactions"
        ));
    }

    let mut committed: HashSet<TransactionId> = HashSet::new();
    let mut aborted: HashSet<TransactionId> = HashSet::new();
    for (i, record) in records.iter().enumerate() {
        match &record.result {
            TxnResult::Finished(outcome) if outcome.is_committed() => {
                committed.insert(outcome.txn);
            }
            TxnResult::Finished(outcome) => {
                aborted.insert(outcome.txn);
            }
            TxnResult::Failed(error) => v.push(format!("request #{i} did not finish: {error}")),
        }
    }

    for &txn in &committed {
        let user = users.created.get(&txn);
        let order = orders.orders.get(&txn);
        let unit = inventory.given.get(&txn);
        match user {
            None => v.push(format!("committed {txn} created no user")),
            Some(name) if users.users.get(name) != Some(&txn) => v.push(format!(
                "committed {txn}: user {name:?} belongs to another transaction"
            )),
            Some(_) => {}
        }
        let Some(order) = order else {
            v.push(format!("committed {txn} has no order"));
            continue;
        };
        if user.is_some_and(|name| *name != order.username) {
            v.push(format!(
                "committed {txn}: the order is for {:?}, not the user created",
                order.username
            ));
        }
        match unit {
            None => v.push(format!(
                "committed {txn} took no product from the inventory"
            )),
            Some(&product) if product != order.product => v.push(format!(
                "committed {txn}: ordered product #{} but took product #{product}",
                order.product
            )),
            Some(_) => {}
        }
    }
    for &txn in &aborted {
        if users.created.contains_key(&txn) {
            v.push(format!("aborted {txn} created a user"));
        }
        if orders.orders.contains_key(&txn) {
            v.push(format!("aborted {txn} created an order"));
        }
        if inventory.given.contains_key(&txn) {
            v.push(format!("aborted {txn} took a product"));
        }
    }

    let n = committed.len();
    for (what, count) in [
        ("user accounts", users.users.len()),
        ("user creations", users.created.len()),
        ("orders", orders.orders.len()),
        ("units given out", inventory.given.len()),
    ] {
        if count != n {
            v.push(format!(
                "{n} transactions committed but there are {count} {what}"
            ));
        }
    }

    let mut orders_per_user: HashMap<&str, usize> = HashMap::new();
    for order in orders.orders.values() {
        *orders_per_user.entry(order.username.as_str()).or_default() += 1;
    }
    for (name, count) in &orders_per_user {
        if !users.users.contains_key(*name) {
            v.push(format!("an order for {name:?}, who has no account"));
        }
        if *count != 1 {
            v.push(format!("user {name:?} has {count} orders"));
        }
    }

    let mut totals = StoreTotals {
        users: users.users.len(),
        orders: orders.orders.len(),
        units_given: 0,
        initial_stock: 0,
        remaining_stock: 0,
    };
    for (product, line) in inventory.lines.iter().enumerate() {
        let given = inventory.given.values().filter(|&&p| p == product).count() as u64;
        let reserved = inventory
            .reserved
            .values()
            .filter(|&&p| p == product)
            .count() as u64;
        let ordered = orders
            .orders
            .values()
            .filter(|o| o.product == product)
            .count() as u64;
        if line.initial != line.on_hand + reserved + given {
            v.push(format!(
                "inventory of {} not conserved: {} initially, {} in stock + {reserved} reserved + {given} given out",
                line.name, line.initial, line.on_hand
            ));
        }
        if given != ordered {
            v.push(format!(
                "{given} units of {} given out but {ordered} ordered",
                line.name
            ));
        }
        totals.units_given += given;
        totals.initial_stock += line.initial;
        totals.remaining_stock += line.on_hand;
    }

    for (service, what, left) in [
        ("UserService", "username reservations", users.pending.len()),
        (
            "UserService",
            "reserved usernames",
            users.reserved_names.len(),
        ),
        (
            "ProductService",
            "unit reservations",
            inventory.reserved.len(),
        ),
        ("OrderService", "pending orders", orders.pending.len()),
    ] {
        if left != 0 {
            v.push(format!("{service} has {left} {what} left behind"));
        }
    }

    for anomaly in anomalies {
        v.push(format!("protocol violation: {anomaly}"));
    }

    Check {
        violations: v.finish(),
        totals,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use dtxn::{Decision, TransactionOutcome};

    use super::*;
    use crate::demo::services::{Order, Store};
    use crate::demo::workload::SignUp;

    pub(in crate::demo) fn txn(n: u128) -> TransactionId {
        TransactionId::from_u128(n)
    }

    /// A finished transaction `n` with `decision`, as the client records it.
    pub(in crate::demo) fn record(n: u128, decision: Decision) -> TxnRecord {
        TxnRecord {
            latency: Duration::from_millis(1),
            result: TxnResult::Finished(TransactionOutcome {
                txn: txn(n),
                decision,
                abort_reason: None,
                hazards: Vec::new(),
            }),
        }
    }

    /// Stores in which transaction 1 committed a sign-up for "alice" and
    /// product 0, and transaction 2 reserved and rolled back.
    fn stores() -> Stores {
        let signup = |name: &str| SignUp {
            username: name.to_owned(),
            product: 0,
            fault: None,
        };
        let mut users = UserStore::default();
        let mut inventory = Inventory::new(&[2, 1, 1, 1]);
        let mut orders = OrderBook::default();
        for (n, name) in [(1, "alice"), (2, "bob")] {
            users.reserve(txn(n), &signup(name)).unwrap();
            inventory.reserve(txn(n), &signup(name)).unwrap();
            orders.reserve(txn(n), &signup(name)).unwrap();
        }
        users.apply(txn(1)).unwrap();
        inventory.apply(txn(1)).unwrap();
        orders.apply(txn(1)).unwrap();
        users.release(txn(2)).unwrap();
        inventory.release(txn(2)).unwrap();
        orders.release(txn(2)).unwrap();
        Stores {
            users,
            inventory,
            orders,
            anomalies: Vec::new(),
        }
    }

    #[test]
    fn consistent_stores_pass() {
        let records = [record(1, Decision::Commit), record(2, Decision::Abort)];
        let check = check(&records, &stores(), 0);
        assert!(check.consistent(), "{:?}", check.violations);
        assert_eq!(check.totals.users, 1);
        assert_eq!(check.totals.units_given, 1);
        assert_eq!(check.totals.remaining_stock, 4);
    }

    #[test]
    fn inconsistencies_are_reported() {
        let records = [record(1, Decision::Commit), record(2, Decision::Abort)];

        // The coordinator says Abort but the stores committed.
        let flipped = [record(1, Decision::Abort), record(2, Decision::Abort)];
        assert!(!check(&flipped, &stores(), 0).consistent());

        // A reservation left behind.
        let mut leftover = stores();
        leftover.inventory.reserved.insert(txn(3), 1);
        leftover.inventory.lines[1].on_hand -= 1;
        let found = check(&records, &leftover, 0).violations;
        assert!(found.iter().any(|v| v.contains("left behind")), "{found:?}");

        // A second order for the same user, with no unit given.
        let mut double = stores();
        double.orders.orders.insert(
            txn(4),
            Order {
                username: "alice".to_owned(),
                product: 0,
            },
        );
        let found = check(&records, &double, 0).violations;
        assert!(found.iter().any(|v| v.contains("2 orders")), "{found:?}");

        // Inventory not conserved, and an unfinished transaction.
        let mut lost = stores();
        lost.inventory.lines[0].on_hand -= 1;
        let found = check(&records, &lost, 1).violations;
        assert!(
            found.iter().any(|v| v.contains("not conserved")),
            "{found:?}"
        );
        assert!(found.iter().any(|v| v.contains("unfinished")), "{found:?}");
    }
}
