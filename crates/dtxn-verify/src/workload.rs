//! Random fault plans shared by the simulation and the soak runner.

use std::time::Duration;

use dtxn::CoordinatorConfig;

use crate::fault::{CrashPoint, DeathMode, Fault, FaultKind};

/// A random fault: any [`CrashPoint`]; a death with probability
/// `death_share`, else an error, panic, hang or slowdown alike. Slowdowns
/// last from 1 ms to twice the timeout of the call they delay (so about
/// half of them time out). Phase-2 faults fire on 1 to `max_attempts`
/// attempts, so some exhaust the retry budget.
pub fn random_fault(
    rng: &mut fastrand::Rng,
    config: &CoordinatorConfig,
    death_share: f64,
) -> Fault {
    let point = CrashPoint::ALL[rng.usize(..CrashPoint::ALL.len())];
    let phase2 = !matches!(point, CrashPoint::BeforePrepare | CrashPoint::AfterPrepare);
    let timeout = if phase2 {
        config.phase2_timeout()
    } else {
        config.prepare_timeout()
    };
    let kind = if rng.f64() < death_share {
        FaultKind::Die(if rng.bool() {
            DeathMode::Error
        } else {
            DeathMode::Hang
        })
    } else {
        match rng.u8(0..4) {
            0 => FaultKind::Error,
            1 => FaultKind::Panic,
            2 => FaultKind::Hang,
            _ => {
                let max = (timeout.as_millis() as u64).saturating_mul(2).max(1);
                FaultKind::Slow(Duration::from_millis(rng.u64(1..=max)))
            }
        }
    };
    let times = if phase2 {
        rng.u32(1..=config.retry().max_attempts())
    } else {
        1
    };
    Fault::new(point, kind).times(times)
}
