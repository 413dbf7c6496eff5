//! Background CPU work that is not urgent (snapshots, whole-store passes) runs on SCHED_IDLE:
//! only when a core is otherwise idle, so on a busy machine it does not take a core from
//! requests. It still progresses under full load, at a small share.

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
    ThreadSchedulePolicy,
};

/// Lower the calling thread for the rest of its life (a thread of its own).
pub fn lower_priority(what: &str) {
    set(NormalThreadSchedulePolicy::Idle, what);
}

/// The calling thread on SCHED_IDLE until this is dropped: for work on a shared thread (tokio's
/// blocking pool), which must get its normal policy back afterwards.
pub struct IdleWhile(&'static str);

impl IdleWhile {
    pub fn enter(what: &'static str) -> IdleWhile {
        set(NormalThreadSchedulePolicy::Idle, what);
        IdleWhile(what)
    }
}

impl Drop for IdleWhile {
    fn drop(&mut self) {
        set(NormalThreadSchedulePolicy::Other, self.0);
    }
}

fn set(policy: NormalThreadSchedulePolicy, what: &str) {
    let policy = ThreadSchedulePolicy::Normal(policy);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy)
    {
        tracing::warn!(error = ?e, thread = what, "could not change the thread's CPU priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::thread_schedule_policy;
    use thread_priority::NormalThreadSchedulePolicy as P;
    use thread_priority::ThreadSchedulePolicy::Normal;

    #[test]
    fn a_background_thread_runs_only_on_idle_cores() -> Result<(), thread_priority::Error> {
        let policy = std::thread::spawn(|| {
            let before = thread_schedule_policy()?;
            lower_priority("test");
            Ok::<_, thread_priority::Error>((before, thread_schedule_policy()?))
        });
        let Ok(seen) = policy.join() else {
            unreachable!("the thread does not panic")
        };
        assert_eq!(seen?, (Normal(P::Other), Normal(P::Idle)));
        // Only that thread: the one that spawned it keeps its policy.
        assert_eq!(thread_schedule_policy()?, Normal(P::Other));
        Ok(())
    }

    #[test]
    fn idle_while_gives_the_thread_its_policy_back() -> Result<(), thread_priority::Error> {
        let policy = std::thread::spawn(|| {
            let during = {
                let _idle = IdleWhile::enter("test");
                thread_schedule_policy()?
            };
            Ok::<_, thread_priority::Error>((during, thread_schedule_policy()?))
        });
        let Ok(seen) = policy.join() else {
            unreachable!("the thread does not panic")
        };
        assert_eq!(seen?, (Normal(P::Idle), Normal(P::Other)));
        Ok(())
    }
}
