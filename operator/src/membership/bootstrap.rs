//! (pure) The first ring of a new cluster.

use rc_api::{Member as RingMember, MemberState, Ring};

use super::{duplicate_address, Action, Change, Decision, View, Wait, RECHECK};

/// A new cluster: ring v1 with every wanted member `normal`, once each pod has an address.
pub(super) fn bootstrap(view: &View) -> Decision {
    let base = Decision {
        action: Action::Nothing,
        ring: None,
        changing: true,
        wait: None,
        recheck: Some(RECHECK),
    };
    let waiting: Vec<&str> = view
        .desired
        .iter()
        .filter(|d| view.address(d).is_none())
        .map(String::as_str)
        .collect();
    if !waiting.is_empty() {
        return Decision {
            wait: Some(Wait {
                reason: format!(
                    "waiting for {} to get an address before installing the first ring",
                    waiting.join(", ")
                ),
                warn: false,
                scale_down: false,
            }),
            ..base
        };
    }
    if view.desired.len() < view.replication_factor {
        return Decision {
            wait: Some(Wait {
                reason: format!(
                    "{} members cannot hold {} copies of every key",
                    view.desired.len(),
                    view.replication_factor
                ),
                warn: true,
                scale_down: false,
            }),
            ..base
        };
    }
    let ring = Ring {
        version: 1,
        members: view
            .desired
            .iter()
            .filter_map(|d| {
                view.address(d).map(|a| RingMember {
                    id: d.clone(),
                    address: a.clone(),
                    state: MemberState::Normal,
                })
            })
            .collect(),
    };
    if let Some(clash) = duplicate_address(&ring.members) {
        return Decision {
            wait: Some(Wait {
                reason: format!("two pods share address {clash}"),
                warn: true,
                scale_down: false,
            }),
            ..base
        };
    }
    Decision {
        action: Action::Push {
            targets: view.targets(&ring),
            ring,
            change: Change::Bootstrap,
        },
        ..base
    }
}
