//! [`Schedule`]: when faults start and end, drawn from the run's seed.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::Nemesis;
use crate::history::Recorder;
use crate::random::Random;
use crate::system::System;

/// Injects faults from a set of nemeses until a deadline: a quiet spell, then a fault
/// from a nemesis that is free, held as long as it says, then healed. At most
/// `max_active` faults are in force at once; once none is, the cluster must converge
/// again within [`crate::system::RECOVERY`].
pub struct Schedule {
    nemeses: Vec<Box<dyn Nemesis>>,
    max_active: usize,
    quiet_ms: (u64, u64),
}

/// What a schedule did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleReport {
    /// Per fault: the nemesis and what it did.
    pub faults: Vec<(String, String)>,
}

struct Active {
    nemesis: usize,
    heal_at: Instant,
}

impl Schedule {
    /// Returns a schedule over `nemeses`, with up to `max_active` faults at once.
    pub fn new(nemeses: Vec<Box<dyn Nemesis>>, max_active: usize) -> Self {
        Self { nemeses, max_active: max_active.max(1), quiet_ms: (300, 1500) }
    }

    /// Runs faults on `system` until `until`, noting each in `recorder`; ends with every
    /// fault healed and the cluster converged.
    pub async fn run(
        &mut self,
        system: &mut System,
        random: &mut Random,
        recorder: &Recorder,
        until: Instant,
    ) -> anyhow::Result<ScheduleReport> {
        let mut report = ScheduleReport::default();
        let mut active: Vec<Active> = Vec::new();
        let mut next_fault_at = Instant::now() + random.millis(self.quiet_ms.0, self.quiet_ms.1);
        loop {
            let now = Instant::now();
            while let Some(due) = active.iter().position(|fault| fault.heal_at <= now) {
                let fault = active.remove(due);
                let nemesis = &mut self.nemeses[fault.nemesis];
                tracing::info!(nemesis = nemesis.name(), "--- heal");
                recorder.note(format!("heal {}", nemesis.name()));
                nemesis
                    .heal(system)
                    .await
                    .with_context(|| format!("healing {}", nemesis.name()))?;
                if active.is_empty() {
                    system.wait_converged().await.with_context(|| {
                        format!("the cluster did not recover after {}", nemesis.name())
                    })?;
                    recorder.note("converged");
                }
            }
            if now >= until && active.is_empty() {
                return Ok(report);
            }
            if now < until && now >= next_fault_at && active.len() < self.max_active {
                if let Some(index) = self.pick_free(random, &active) {
                    let nemesis = &mut self.nemeses[index];
                    let injected = nemesis
                        .inject(system, random)
                        .await
                        .with_context(|| format!("injecting {}", nemesis.name()))?;
                    if let Some(fault) = injected {
                        tracing::info!(nemesis = nemesis.name(), fault = %fault.description, hold = ?fault.hold, "--- inject");
                        recorder.note(format!(
                            "inject {}: {} for {} ms",
                            nemesis.name(),
                            fault.description,
                            fault.hold.as_millis()
                        ));
                        report.faults.push((nemesis.name().to_string(), fault.description));
                        active
                            .push(Active { nemesis: index, heal_at: Instant::now() + fault.hold });
                    }
                }
                next_fault_at = Instant::now() + random.millis(self.quiet_ms.0, self.quiet_ms.1);
            }
            let wake = active.iter().map(|fault| fault.heal_at).chain([next_fault_at]).min();
            let nap =
                wake.map_or(Duration::ZERO, |wake| wake.saturating_duration_since(Instant::now()));
            tokio::time::sleep(nap.clamp(Duration::from_millis(10), Duration::from_millis(200)))
                .await;
        }
    }

    /// Returns a nemesis with no fault in force that may start now.
    fn pick_free(&self, random: &mut Random, active: &[Active]) -> Option<usize> {
        let exclusive_active =
            active.iter().any(|fault| self.nemeses[fault.nemesis].is_exclusive());
        if exclusive_active {
            return None;
        }
        let free: Vec<usize> = (0..self.nemeses.len())
            .filter(|index| !active.iter().any(|fault| fault.nemesis == *index))
            .filter(|index| active.is_empty() || !self.nemeses[*index].is_exclusive())
            .collect();
        random.pick(&free).copied()
    }
}
