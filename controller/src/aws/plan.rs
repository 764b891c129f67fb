//! Which Elastic IP goes to which gateway instance, and which instance the VPC routes point at.
//! Pure and deterministic: equal inputs give equal plans, whatever the order of the inputs.
//!
//! * **Sticky.** An address stays on the healthy instance it is on: moving an Elastic IP breaks
//!   every connection that uses it, so addresses are never moved just to rebalance.
//! * **Balanced placement.** Every other address (sorted by allocation ID) goes to the healthy
//!   instance carrying the fewest so far, ties to the smaller name.
//! * **Failover.** An address taken off one of the gateway's instances is a [`Move`], with the
//!   reason that instance cannot keep it.
//! * **Draining.** An instance that stopped being healthy but is still draining
//!   (`spec.health.drainSeconds` after its pod stopped being Ready) keeps the addresses it has,
//!   so its existing flows can finish; it gets no new ones. They move when the drain is over.
//! * **Nothing healthy.** No address is placed (each stays where it is: an Elastic IP on a failed
//!   instance carries no new flows, because the instance gets no pods, and keeping it there saves
//!   a move when the instance comes back).
//! * **Route target.** The previous target while it is healthy and carries an address, else
//!   the first (by name) healthy instance carrying one; none when no instance carries any.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// Why an instance cannot carry addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unhealthy {
    /// The gateway pod's Ready condition is not True.
    PodNotReady,
    /// The gateway pod is being deleted.
    PodTerminating,
    /// The EC2 instance is not `running` (the state, as EC2 names it).
    Ec2State(String),
    /// EC2 does not know the instance any more, or the gateway pod is gone.
    Gone,
    /// The instance's EC2 identity is unknown (node missing, unparsable providerID, ...).
    Unidentified(String),
    /// The instance type cannot hold the private addresses it would need.
    LimitExceeded(String),
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::PodNotReady => f.write_str("pod not Ready"),
            Unhealthy::PodTerminating => f.write_str("pod terminating"),
            Unhealthy::Ec2State(state) => write!(f, "EC2 instance {state}"),
            Unhealthy::Gone => f.write_str("instance gone"),
            Unhealthy::Unidentified(why) => write!(f, "EC2 instance unknown: {why}"),
            Unhealthy::LimitExceeded(why) => write!(f, "instance limit exceeded: {why}"),
        }
    }
}

/// One Elastic IP of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanAddress {
    pub allocation_id: String,
    pub public_ip: Ipv4Addr,
    /// The gateway instance (by name) the address is associated with now, if any.
    pub current_instance: Option<String>,
    /// `false` when the address cannot be used (an adopted address associated with something
    /// that is not this gateway's): it is neither placed nor moved.
    pub usable: bool,
}

/// One instance of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInstance {
    /// The gateway pod's name.
    pub name: String,
    /// `None`: healthy.
    pub unhealthy: Option<Unhealthy>,
    /// Unhealthy, but keeps the addresses it carries until its drain is over.
    pub draining: bool,
}

/// The planner's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanInput {
    pub addresses: Vec<PlanAddress>,
    pub instances: Vec<PlanInstance>,
    /// Instance the routes pointed at after the previous pass.
    pub previous_route_target: Option<String>,
}

/// An address taken off an instance that cannot keep it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move {
    pub allocation_id: String,
    pub public_ip: Ipv4Addr,
    pub from: String,
    pub to: String,
    pub reason: Unhealthy,
}

/// The planner's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Allocation ID → instance name, for every placed address.
    pub placements: BTreeMap<String, String>,
    /// Addresses per healthy instance (0 included).
    pub counts: BTreeMap<String, u32>,
    /// Failovers, sorted by allocation ID.
    pub moves: Vec<Move>,
    pub route_target: Option<String>,
    /// Usable addresses that were not placed (no healthy instance), sorted.
    pub unplaced: Vec<String>,
    /// Addresses left on draining instances, sorted.
    pub draining: Vec<String>,
}

/// Plans the placement of `input.addresses` on `input.instances`.
pub fn plan(input: &PlanInput) -> Plan {
    // Duplicate names: the first (in name order, healthy first) wins, so the result is
    // independent of the input order.
    let mut instances: BTreeMap<&str, &PlanInstance> = BTreeMap::new();
    let mut sorted_instances: Vec<&PlanInstance> = input.instances.iter().collect();
    sorted_instances.sort_by(|a, b| (&a.name, &a.unhealthy).cmp(&(&b.name, &b.unhealthy)));
    for instance in sorted_instances {
        instances.entry(instance.name.as_str()).or_insert(instance);
    }
    let healthy: BTreeSet<&str> = instances
        .values()
        .filter(|instance| instance.unhealthy.is_none())
        .map(|instance| instance.name.as_str())
        .collect();
    let mut counts: BTreeMap<String, u32> =
        healthy.iter().map(|name| ((*name).to_owned(), 0)).collect();

    let mut addresses: Vec<&PlanAddress> = input
        .addresses
        .iter()
        .filter(|address| address.usable)
        .collect();
    addresses.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
    addresses.dedup_by(|a, b| a.allocation_id == b.allocation_id);

    let mut plan = Plan::default();
    let mut homeless = Vec::new();
    for address in addresses {
        match address.current_instance.as_deref() {
            Some(current) if healthy.contains(current) => {
                plan.placements
                    .insert(address.allocation_id.clone(), current.to_owned());
                *counts.entry(current.to_owned()).or_default() += 1;
            }
            Some(current)
                if instances
                    .get(current)
                    .is_some_and(|instance| instance.draining) =>
            {
                plan.draining.push(address.allocation_id.clone());
            }
            _ => homeless.push(address),
        }
    }
    for address in homeless {
        let target = counts
            .iter()
            .min_by(|(a_name, a_count), (b_name, b_count)| {
                a_count.cmp(b_count).then_with(|| a_name.cmp(b_name))
            })
            .map(|(name, _)| name.clone());
        let Some(target) = target else {
            plan.unplaced.push(address.allocation_id.clone());
            continue;
        };
        if let Some(from) = &address.current_instance {
            let reason = instances
                .get(from.as_str())
                .and_then(|instance| instance.unhealthy.clone())
                .unwrap_or(Unhealthy::Gone);
            plan.moves.push(Move {
                allocation_id: address.allocation_id.clone(),
                public_ip: address.public_ip,
                from: from.clone(),
                to: target.clone(),
                reason,
            });
        }
        *counts.entry(target.clone()).or_default() += 1;
        plan.placements
            .insert(address.allocation_id.clone(), target);
    }

    let carrying = |name: &str| counts.get(name).is_some_and(|count| *count > 0);
    plan.route_target = input
        .previous_route_target
        .as_deref()
        .filter(|previous| carrying(previous))
        .map(str::to_owned)
        .or_else(|| {
            counts
                .iter()
                .find(|(_, count)| **count > 0)
                .map(|(name, _)| name.clone())
        });
    plan.counts = counts;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(id: &str, last_octet: u8, on: Option<&str>) -> PlanAddress {
        PlanAddress {
            allocation_id: id.to_owned(),
            public_ip: Ipv4Addr::new(198, 51, 100, last_octet),
            current_instance: on.map(str::to_owned),
            usable: true,
        }
    }

    fn healthy(name: &str) -> PlanInstance {
        PlanInstance {
            name: name.to_owned(),
            unhealthy: None,
            draining: false,
        }
    }

    fn sick(name: &str, why: Unhealthy) -> PlanInstance {
        PlanInstance {
            name: name.to_owned(),
            unhealthy: Some(why),
            draining: false,
        }
    }

    fn placements(plan: &Plan) -> Vec<(&str, &str)> {
        plan.placements
            .iter()
            .map(|(id, instance)| (id.as_str(), instance.as_str()))
            .collect()
    }

    #[test]
    fn fresh_addresses_are_balanced_with_ties_to_the_smaller_name() {
        let input = PlanInput {
            addresses: vec![
                address("eipalloc-c", 3, None),
                address("eipalloc-a", 1, None),
                address("eipalloc-b", 2, None),
            ],
            instances: vec![healthy("gw-b"), healthy("gw-a")],
            previous_route_target: None,
        };
        let plan = plan(&input);
        assert_eq!(
            placements(&plan),
            [
                ("eipalloc-a", "gw-a"),
                ("eipalloc-b", "gw-b"),
                ("eipalloc-c", "gw-a")
            ]
        );
        assert_eq!(
            plan.counts,
            BTreeMap::from([("gw-a".to_owned(), 2), ("gw-b".to_owned(), 1)])
        );
        assert!(plan.moves.is_empty());
        assert!(plan.unplaced.is_empty());
        assert_eq!(plan.route_target.as_deref(), Some("gw-a"));
    }

    #[test]
    fn addresses_stay_on_healthy_instances_even_when_unbalanced() {
        let input = PlanInput {
            addresses: vec![
                address("eipalloc-a", 1, Some("gw-b")),
                address("eipalloc-b", 2, Some("gw-b")),
                address("eipalloc-c", 3, None),
            ],
            instances: vec![healthy("gw-a"), healthy("gw-b"), healthy("gw-c")],
            previous_route_target: None,
        };
        let plan = plan(&input);
        assert_eq!(
            placements(&plan),
            [
                ("eipalloc-a", "gw-b"),
                ("eipalloc-b", "gw-b"),
                ("eipalloc-c", "gw-a")
            ]
        );
        assert_eq!(plan.counts["gw-c"], 0);
        assert!(plan.moves.is_empty());
    }

    #[test]
    fn addresses_of_failed_instances_move_with_the_reason() {
        let input = PlanInput {
            addresses: vec![
                address("eipalloc-a", 1, Some("gw-a")),
                address("eipalloc-b", 2, Some("gw-b")),
                address("eipalloc-c", 3, Some("gw-c")),
                address("eipalloc-d", 4, Some("gw-d")),
                address("eipalloc-e", 5, Some("gw-vanished")),
                address("eipalloc-f", 6, Some("gw-ok")),
            ],
            instances: vec![
                sick("gw-a", Unhealthy::PodNotReady),
                sick("gw-b", Unhealthy::PodTerminating),
                sick("gw-c", Unhealthy::Ec2State("stopping".to_owned())),
                sick("gw-d", Unhealthy::Gone),
                healthy("gw-ok"),
                healthy("gw-spare"),
            ],
            previous_route_target: None,
        };
        let plan = plan(&input);
        let moves: Vec<(&str, &str, &str, String)> = plan
            .moves
            .iter()
            .map(|step| {
                (
                    step.allocation_id.as_str(),
                    step.from.as_str(),
                    step.to.as_str(),
                    step.reason.to_string(),
                )
            })
            .collect();
        assert_eq!(
            moves,
            [
                ("eipalloc-a", "gw-a", "gw-spare", "pod not Ready".to_owned()),
                ("eipalloc-b", "gw-b", "gw-ok", "pod terminating".to_owned()),
                (
                    "eipalloc-c",
                    "gw-c",
                    "gw-spare",
                    "EC2 instance stopping".to_owned()
                ),
                ("eipalloc-d", "gw-d", "gw-ok", "instance gone".to_owned()),
                (
                    "eipalloc-e",
                    "gw-vanished",
                    "gw-spare",
                    "instance gone".to_owned()
                ),
            ]
        );
        assert_eq!(plan.counts["gw-ok"], 3);
        assert_eq!(plan.counts["gw-spare"], 3);
        assert!(!plan.counts.contains_key("gw-a"));
    }

    #[test]
    fn nothing_is_placed_without_a_healthy_instance() {
        let input = PlanInput {
            addresses: vec![
                address("eipalloc-a", 1, Some("gw-a")),
                address("eipalloc-b", 2, None),
            ],
            instances: vec![sick("gw-a", Unhealthy::PodNotReady)],
            previous_route_target: Some("gw-a".to_owned()),
        };
        let plan = plan(&input);
        assert!(plan.placements.is_empty());
        assert!(plan.moves.is_empty());
        assert!(plan.counts.is_empty());
        assert_eq!(plan.unplaced, ["eipalloc-a", "eipalloc-b"]);
        assert_eq!(plan.route_target, None);
    }

    #[test]
    fn draining_instances_keep_their_addresses_but_get_no_new_ones() {
        let mut draining = sick("gw-a", Unhealthy::PodNotReady);
        draining.draining = true;
        let input = PlanInput {
            addresses: vec![
                address("eipalloc-a", 1, Some("gw-a")),
                address("eipalloc-b", 2, None),
            ],
            instances: vec![draining, healthy("gw-b")],
            previous_route_target: Some("gw-a".to_owned()),
        };
        let plan = plan(&input);
        assert_eq!(placements(&plan), [("eipalloc-b", "gw-b")]);
        assert_eq!(plan.draining, ["eipalloc-a"]);
        assert!(plan.moves.is_empty());
        assert!(!plan.counts.contains_key("gw-a"));
        // Routes do not wait: new flows must go to a healthy instance.
        assert_eq!(plan.route_target.as_deref(), Some("gw-b"));
    }

    #[test]
    fn unusable_addresses_are_left_alone() {
        let mut foreign = address("eipalloc-a", 1, None);
        foreign.usable = false;
        let input = PlanInput {
            addresses: vec![foreign, address("eipalloc-b", 2, None)],
            instances: vec![healthy("gw-a")],
            previous_route_target: None,
        };
        let plan = plan(&input);
        assert_eq!(placements(&plan), [("eipalloc-b", "gw-a")]);
        assert!(plan.unplaced.is_empty());
    }

    #[test]
    fn an_instance_over_its_limit_hands_its_addresses_to_the_others() {
        let mut input = PlanInput {
            addresses: vec![
                address("eipalloc-a", 1, Some("gw-a")),
                address("eipalloc-b", 2, Some("gw-a")),
                address("eipalloc-c", 3, Some("gw-b")),
            ],
            instances: vec![healthy("gw-a"), healthy("gw-b"), healthy("gw-c")],
            previous_route_target: Some("gw-a".to_owned()),
        };
        assert!(plan(&input).moves.is_empty());
        // The manager marks the instance whose type cannot hold the addresses and plans again.
        input.instances[0].unhealthy = Some(Unhealthy::LimitExceeded(
            "2 IPv4 addresses per network interface".to_owned(),
        ));
        let plan = plan(&input);
        assert_eq!(
            placements(&plan),
            [
                ("eipalloc-a", "gw-c"),
                ("eipalloc-b", "gw-b"),
                ("eipalloc-c", "gw-b")
            ]
        );
        assert!(plan
            .moves
            .iter()
            .all(|step| matches!(step.reason, Unhealthy::LimitExceeded(_))));
        assert_eq!(plan.moves.len(), 2);
        assert_eq!(plan.route_target.as_deref(), Some("gw-b"));
    }

    #[test]
    fn route_target_sticks_while_healthy_and_fails_over_otherwise() {
        let addresses = vec![
            address("eipalloc-a", 1, Some("gw-a")),
            address("eipalloc-b", 2, Some("gw-b")),
            address("eipalloc-c", 3, Some("gw-c")),
        ];
        let sticky = PlanInput {
            addresses: addresses.clone(),
            instances: vec![healthy("gw-a"), healthy("gw-b"), healthy("gw-c")],
            previous_route_target: Some("gw-c".to_owned()),
        };
        assert_eq!(plan(&sticky).route_target.as_deref(), Some("gw-c"));

        let failed = PlanInput {
            instances: vec![
                healthy("gw-a"),
                healthy("gw-b"),
                sick("gw-c", Unhealthy::PodTerminating),
            ],
            ..sticky.clone()
        };
        let plan_failed = plan(&failed);
        // gw-c's address moved to gw-a (fewest, smaller name); the routes follow the first
        // carrying instance by name.
        assert_eq!(plan_failed.route_target.as_deref(), Some("gw-a"));

        // A healthy previous target that carries nothing is not kept.
        let empty_target = PlanInput {
            addresses: vec![address("eipalloc-a", 1, Some("gw-b"))],
            instances: vec![healthy("gw-a"), healthy("gw-b")],
            previous_route_target: Some("gw-a".to_owned()),
        };
        assert_eq!(plan(&empty_target).route_target.as_deref(), Some("gw-b"));

        // Without addresses nothing can carry the routes.
        let no_addresses = PlanInput {
            addresses: Vec::new(),
            instances: vec![healthy("gw-a")],
            previous_route_target: Some("gw-a".to_owned()),
        };
        assert_eq!(plan(&no_addresses).route_target, None);
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order() {
        let input = PlanInput {
            addresses: vec![
                address("eipalloc-d", 4, Some("gw-x")),
                address("eipalloc-a", 1, None),
                address("eipalloc-c", 3, Some("gw-b")),
                address("eipalloc-b", 2, Some("gw-c")),
                address("eipalloc-e", 5, None),
            ],
            instances: vec![
                healthy("gw-c"),
                sick("gw-x", Unhealthy::PodNotReady),
                healthy("gw-a"),
                healthy("gw-b"),
            ],
            previous_route_target: Some("gw-x".to_owned()),
        };
        let expected = plan(&input);
        let mut reversed = input.clone();
        reversed.addresses.reverse();
        reversed.instances.reverse();
        assert_eq!(plan(&reversed), expected);
        let mut rotated = input.clone();
        rotated.addresses.rotate_left(2);
        rotated.instances.rotate_left(1);
        assert_eq!(plan(&rotated), expected);
        // Planning the placed result again changes nothing: a plan is a fixed point.
        let settled = PlanInput {
            addresses: input
                .addresses
                .iter()
                .map(|address| PlanAddress {
                    current_instance: expected.placements.get(&address.allocation_id).cloned(),
                    ..address.clone()
                })
                .collect(),
            previous_route_target: expected.route_target.clone(),
            ..input.clone()
        };
        let again = plan(&settled);
        assert_eq!(again.placements, expected.placements);
        assert!(again.moves.is_empty());
        assert_eq!(again.route_target, expected.route_target);
    }

    #[test]
    fn duplicate_instance_names_resolve_the_same_way_in_any_order() {
        let input = PlanInput {
            addresses: vec![address("eipalloc-a", 1, Some("gw-a"))],
            instances: vec![sick("gw-a", Unhealthy::PodNotReady), healthy("gw-a")],
            previous_route_target: None,
        };
        let mut reversed = input.clone();
        reversed.instances.reverse();
        assert_eq!(plan(&input), plan(&reversed));
    }
}
