//! Frontegg's vendor-entitlements snapshot, flattened from the index so that an SDK deciding
//! locally (`@frontegg/client`'s `EntitlementsClient`, which reads it) answers as
//! [`EntitlementIndex::check`] does wherever the snapshot's format can say it.
//!
//! How the SDK decides a feature (read from its shipped code): entitled if the account's or the
//! user's entry for the feature has no expiry or one in the future; else if any flag of the
//! feature evaluates to `"true"`; else if any bundle holding the feature evaluates to `"true"`
//! by its rules. It keeps one entry per (account, user, feature) and per bundle (a later bundle
//! overwrites an earlier one's entry), and knows no start dates, hierarchy or counts.
//!
//! So the snapshot is built per feature, not per plan:
//! - every (account, user or none, feature) the index would entitle through a grant gets one
//!   entry in a bundle holding only that feature (bundle ID = the feature's ID), with the latest
//!   end among its active grants (none when one never ends). Account entries include grants
//!   inherited from ancestors; user entries hold the user's own grants (the SDK unites both).
//!   Entries whose grants all expired are kept with their expiry, so the SDK says
//!   `bundle-expired`; revoked and not-yet-started grants are left out;
//! - Tenantry's flags only take a feature away, while the SDK's flags give it: no flag is
//!   exported as a flag. A flag that is off for everyone removes the feature's entries and
//!   bundles; a flag that is on for everyone changes nothing; a flag with rules is folded into
//!   the rules of every targeting bundle of the feature (flag ∧ plan targeting, as a first-match
//!   rule list), and cannot be applied to an account or user holding a grant (the SDK entitles
//!   on the entry alone: [`VendorSnapshot`] docs name this difference);
//! - a plan with targeting rules becomes a bundle with its rules and default treatment (one per
//!   plan for its features without a conditional flag, one per plan and feature otherwise);
//! - `max_count` allocations entitle (any count), `bool` false ones do not: a requested amount
//!   cannot be expressed.
//!
//! The snapshot is stale once a scheduled grant starts: [`VendorSnapshot::offset`] counts
//! started grants, so it changes then and the SDK's next poll fetches a new snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::super::model::{Rule, Treatment};
use super::{
    CompactGrant, EntitlementIndex, FeatureFlag, GrantStatus, MAX_ANCESTOR_DEPTH, NEVER, PlanEntry,
    TenantNode,
};

/// The most entries a snapshot holds; a bigger world is refused (FAILED_PRECONDITION) rather
/// than answered with a snapshot the SDK would decide wrongly from.
pub const MAX_VENDOR_ENTITLEMENTS: usize = 1_000_000;
/// The snapshot would hold more than [`MAX_VENDOR_ENTITLEMENTS`] entitlements (the service
/// answers FAILED_PRECONDITION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the vendor-entitlements snapshot would hold more than {MAX_VENDOR_ENTITLEMENTS} \
     entitlements; use the check API"
)]
pub struct SnapshotTooLarge;

/// Low bits of the offset that count started grants; the revision sits above them.
const STARTED_BITS: u32 = 20;
/// Offsets stay exact JavaScript numbers (the SDK compares them with `===`).
const JS_SAFE: u64 = (1 << 53) - 1;

/// A feature as the snapshot lists it (`[id, key, permissions]`).
#[derive(Debug, Clone, PartialEq)]
pub struct VendorFeature {
    pub id: Uuid,
    pub key: String,
    pub permissions: Vec<String>,
}

/// A feature bundle (`[id, featureIds, defaultTreatment, rules]`).
#[derive(Debug, Clone, PartialEq)]
pub struct VendorBundle {
    pub id: String,
    pub feature_ids: Vec<Uuid>,
    pub default_treatment: Treatment,
    pub rules: Vec<Rule>,
}

/// One entitlement (`[bundleId, tenantId, userId, expirationDate]`); the bundle is the one
/// holding only `feature`.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorEntitlement {
    pub feature: Uuid,
    pub tenant_id: String,
    pub user_id: Option<String>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The snapshot an SDK loads.
///
/// What it cannot express (the SDK's answer differs from Tenantry's check): a flag with rules
/// on a feature an account or user holds through a grant (the SDK entitles; Tenantry applies the
/// flag); an account Tenantry does not know (the SDK applies plan targeting to it; Tenantry
/// answers not entitled); a requested `max_count` amount; and for up to the SDK's polling
/// interval, a grant starting (the offset changes at the start, the SDK sees it on its next
/// poll).
#[derive(Debug, Clone, PartialEq)]
pub struct VendorSnapshot {
    /// `revision × 2^20 + started grants (mod 2^20)`, within 2^53: changes with every write
    /// and whenever a scheduled grant starts.
    pub offset: u64,
    pub revision: u64,
    pub features: Vec<VendorFeature>,
    pub bundles: Vec<VendorBundle>,
    pub entitlements: Vec<VendorEntitlement>,
    /// When the next scheduled grant starts: the snapshot is stale from then on.
    pub stale_from: Option<DateTime<Utc>>,
}

impl VendorSnapshot {
    /// Whether this snapshot still describes `index` at `now` (else build a new one).
    pub fn is_current(&self, index: &EntitlementIndex, now: DateTime<Utc>) -> bool {
        self.revision == index.revision() && self.stale_from.is_none_or(|s| index.present(now) < s)
    }
}

/// What a feature's flag does to it, seen from the SDK.
#[derive(Debug, Clone, Copy)]
enum Gate<'a> {
    /// No flag, or one that is on for everyone.
    Open,
    /// A flag that is off for everyone: nobody is entitled.
    Closed,
    /// Depends on attributes.
    Rules(&'a FeatureFlag),
}

fn gate(flag: Option<&FeatureFlag>) -> Gate<'_> {
    let Some(flag) = flag else {
        return Gate::Open;
    };
    let constant = if flag.on {
        let default = flag.default_treatment.is_true();
        flag.rules
            .iter()
            .all(|r| r.treatment.is_true() == default)
            .then_some(default)
    } else {
        Some(flag.off_treatment.is_true())
    };
    match constant {
        Some(true) => Gate::Open,
        Some(false) => Gate::Closed,
        None => Gate::Rules(flag),
    }
}

/// `flag ∧ plan` as one first-match rule list and default: within each flag rule that gives
/// `true`, the plan's rules (each joined with the flag rule's conditions) decide, then the
/// plan's default; a flag rule giving `false` stays `false`; past all flag rules, the flag's
/// default `true` hands over to the plan's rules, `false` ends in `false`.
fn conjoin(flag: &FeatureFlag, rules: &[Rule], default: Treatment) -> (Vec<Rule>, Treatment) {
    let mut out = Vec::new();
    for f in &flag.rules {
        if !f.treatment.is_true() {
            out.push(f.clone());
            continue;
        }
        for p in rules {
            let mut conditions = f.conditions.clone();
            conditions.extend(p.conditions.iter().cloned());
            out.push(Rule {
                description: p.description.clone(),
                conditions,
                treatment: p.treatment,
            });
        }
        out.push(Rule {
            description: f.description.clone(),
            conditions: f.conditions.clone(),
            treatment: default,
        });
    }
    if flag.default_treatment.is_true() {
        out.extend(rules.iter().cloned());
        (out, default)
    } else {
        (out, Treatment::False)
    }
}

/// The latest end among a subject's active grants of one feature, and among its expired ones.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    active: Option<i64>,
    expired: Option<i64>,
}

fn micros(t: i64) -> Option<DateTime<Utc>> {
    (t != NEVER)
        .then(|| DateTime::from_timestamp_micros(t))
        .flatten()
}

impl EntitlementIndex {
    /// Builds the vendor snapshot as of `now` (see the module docs). O(grants + catalog).
    pub fn vendor_snapshot(&self, now: DateTime<Utc>) -> Result<VendorSnapshot, SnapshotTooLarge> {
        let at = self.present(now).timestamp_micros();
        let catalog = &*self.catalog;
        let raw = &*catalog.raw;
        let gates: Vec<Gate<'_>> = raw
            .features
            .iter()
            .map(|f| gate(raw.flags.get(&f.key)))
            .collect();
        let open = |f: u32| !matches!(gates.get(f as usize), Some(Gate::Closed) | None);

        let mut entitlements = Vec::new();
        let mut started = 0u64;
        let mut next_start = NEVER;
        let mut ends: BTreeMap<u32, Ends> = BTreeMap::new();
        let fold = |ends: &mut BTreeMap<u32, Ends>, g: &CompactGrant, plan: &PlanEntry| {
            let (active, end) = match g.status(at) {
                GrantStatus::Active => (true, g.expires_at.min(g.revoked_at)),
                GrantStatus::Expired => (false, g.expires_at),
                GrantStatus::Revoked | GrantStatus::Scheduled => return,
            };
            for &(f, allocation) in plan.features.iter() {
                if !allocation.is_granting() || !open(f) {
                    continue;
                }
                let e = ends.entry(f).or_default();
                let slot = if active {
                    &mut e.active
                } else {
                    &mut e.expired
                };
                *slot = Some(slot.map_or(end, |s| s.max(end)));
            }
        };
        let mut emit = |ends: &mut BTreeMap<u32, Ends>,
                        tenant: &str,
                        user: Option<&str>|
         -> Result<(), SnapshotTooLarge> {
            for (f, e) in std::mem::take(ends) {
                let Some(end) = e.active.or(e.expired) else {
                    continue;
                };
                if entitlements.len() == MAX_VENDOR_ENTITLEMENTS {
                    return Err(SnapshotTooLarge);
                }
                entitlements.push(VendorEntitlement {
                    feature: raw.features[f as usize].id,
                    tenant_id: tenant.to_owned(),
                    user_id: user.map(str::to_owned),
                    expires_at: micros(end),
                });
            }
            Ok(())
        };

        for shard in &self.shards {
            for (tenant, node) in shard.iter() {
                let tenant: &str = tenant;
                let users = node.user_lists();
                for g in node
                    .grants
                    .iter()
                    .chain(users.iter().flat_map(|u| u.grants.iter()))
                {
                    if g.starts_at <= at {
                        started += 1;
                    } else {
                        next_start = next_start.min(g.starts_at);
                    }
                }
                for g in node.grants.iter() {
                    if let Some(plan) = catalog.plan(g.plan) {
                        fold(&mut ends, g, plan);
                    }
                }
                if catalog.any_inherit {
                    for ancestor in self.inheriting_ancestors(tenant, node) {
                        for g in ancestor.grants.iter() {
                            if let Some(plan) = catalog.plan(g.plan).filter(|p| p.inherit) {
                                fold(&mut ends, g, plan);
                            }
                        }
                    }
                }
                emit(&mut ends, tenant, None)?;
                for u in users {
                    for g in u.grants.iter() {
                        if let Some(plan) = catalog.plan(g.plan) {
                            fold(&mut ends, g, plan);
                        }
                    }
                    emit(&mut ends, tenant, Some(&*u.user))?;
                }
            }
        }
        entitlements.sort_unstable_by(|a, b| {
            (&a.tenant_id, &a.user_id, a.feature).cmp(&(&b.tenant_id, &b.user_id, b.feature))
        });

        let features: Vec<VendorFeature> = raw
            .features
            .iter()
            .map(|f| VendorFeature {
                id: f.id,
                key: f.key.clone(),
                permissions: f.permissions.clone(),
            })
            .collect();
        let mut granted: Vec<Uuid> = entitlements.iter().map(|e| e.feature).collect();
        granted.sort_unstable();
        granted.dedup();
        let mut bundles: Vec<VendorBundle> = granted
            .into_iter()
            .map(|id| VendorBundle {
                id: id.to_string(),
                feature_ids: vec![id],
                default_treatment: Treatment::False,
                rules: Vec::new(),
            })
            .collect();
        for &slot in &catalog.targeted {
            let Some(plan) = catalog.plan(slot) else {
                continue;
            };
            let Some(source) = raw.plans.get(&plan.id) else {
                continue;
            };
            let mut whole = Vec::new();
            for &(f, allocation) in plan.features.iter() {
                if !allocation.is_granting() {
                    continue;
                }
                let feature = &raw.features[f as usize];
                match gates[f as usize] {
                    Gate::Open => whole.push(feature.id),
                    Gate::Closed => {}
                    Gate::Rules(flag) => {
                        let (rules, default_treatment) =
                            conjoin(flag, &source.rules, source.default_treatment);
                        bundles.push(VendorBundle {
                            id: format!("{}:{}", plan.id, feature.id),
                            feature_ids: vec![feature.id],
                            default_treatment,
                            rules,
                        });
                    }
                }
            }
            if !whole.is_empty() {
                bundles.push(VendorBundle {
                    id: plan.id.to_string(),
                    feature_ids: whole,
                    default_treatment: source.default_treatment,
                    rules: source.rules.clone(),
                });
            }
        }

        Ok(VendorSnapshot {
            offset: ((self.revision << STARTED_BITS) | (started & ((1 << STARTED_BITS) - 1)))
                & JS_SAFE,
            revision: self.revision,
            features,
            bundles,
            entitlements,
            stale_from: micros(next_start),
        })
    }

    /// A tenant's ancestors, nearest first, as checks walk them (bounded, cycle-safe).
    fn inheriting_ancestors<'s>(
        &'s self,
        tenant: &'s str,
        node: &'s TenantNode,
    ) -> impl Iterator<Item = &'s TenantNode> + 's {
        let mut seen: Vec<&str> = Vec::new();
        let mut current = node.parent.as_deref();
        std::iter::from_fn(move || {
            let parent = current?;
            if seen.len() == MAX_ANCESTOR_DEPTH || parent == tenant || seen.contains(&parent) {
                return None;
            }
            let next = self.node(parent)?;
            seen.push(parent);
            current = next.parent.as_deref();
            Some(next)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::super::condition::CompiledTargeting;
    use super::super::super::model::{
        AllocationType, AttributeType, Condition, ConditionOp, Feature, MergePolicy, PlanFeature,
    };
    use super::super::super::writer::{IndexWriter, Snapshot};
    use super::super::{Allocation, CheckRequest, Subject, Target};
    use super::*;
    use crate::fixtures::{feature as fixture_feature, grant, plan, t};

    fn in_list(attribute: &str, value: &str) -> Condition {
        Condition {
            attribute: attribute.into(),
            attribute_type: AttributeType::Custom,
            negate: false,
            op: ConditionOp::InList,
            value: json!({"list": [value]}),
        }
    }

    fn rule(conditions: Vec<Condition>, treatment: bool) -> Rule {
        Rule {
            description: None,
            conditions,
            treatment: treatment.into(),
        }
    }

    fn flag(on: bool, rules: Vec<Rule>, default: bool, off: bool) -> FeatureFlag {
        FeatureFlag {
            id: Uuid::new_v4(),
            feature_key: "f".into(),
            name: "f".into(),
            description: None,
            on,
            off_treatment: off.into(),
            default_treatment: default.into(),
            rules,
        }
    }

    /// Every attribute combination over `a` ∈ {x, y, missing} and `b` ∈ {x, y, missing}.
    fn grid() -> Vec<Value> {
        let values = [Some("x"), Some("y"), None];
        let mut out = Vec::new();
        for a in values {
            for b in values {
                let mut m = serde_json::Map::new();
                if let Some(a) = a {
                    m.insert("a".into(), json!(a));
                }
                if let Some(b) = b {
                    m.insert("b".into(), json!(b));
                }
                out.push(Value::Object(m));
            }
        }
        out
    }

    #[test]
    fn conjoined_rules_decide_flag_and_plan_together() {
        let flags = [
            flag(
                true,
                vec![rule(vec![in_list("a", "x")], true)],
                false,
                false,
            ),
            flag(
                true,
                vec![rule(vec![in_list("a", "x")], false)],
                true,
                false,
            ),
            flag(
                true,
                vec![
                    rule(vec![in_list("a", "y")], false),
                    rule(vec![in_list("b", "x")], true),
                ],
                false,
                false,
            ),
        ];
        let plans = [
            (vec![rule(vec![in_list("b", "y")], true)], Treatment::False),
            (vec![rule(vec![in_list("b", "x")], false)], Treatment::True),
            (vec![], Treatment::True),
        ];
        for f in &flags {
            let f_eval = CompiledTargeting::new(&f.rules, f.default_treatment.is_true());
            for (rules, default) in &plans {
                let p_eval = CompiledTargeting::new(rules, default.is_true());
                let (joined, joined_default) = conjoin(f, rules, *default);
                let j_eval = CompiledTargeting::new(&joined, joined_default.is_true());
                for attrs in grid() {
                    let a = attrs.as_object();
                    assert_eq!(
                        j_eval.evaluate(a),
                        f_eval.evaluate(a) && p_eval.evaluate(a),
                        "{f:?} {rules:?} {default:?} {attrs}"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_flags_are_open_or_closed() {
        assert!(matches!(gate(None), Gate::Open));
        assert!(matches!(
            gate(Some(&flag(false, vec![], true, false))),
            Gate::Closed
        ));
        assert!(matches!(
            gate(Some(&flag(false, vec![], false, true))),
            Gate::Open
        ));
        assert!(matches!(
            gate(Some(&flag(true, vec![rule(vec![], true)], true, false))),
            Gate::Open
        ));
        assert!(matches!(
            gate(Some(&flag(true, vec![], false, true))),
            Gate::Closed
        ));
        assert!(matches!(
            gate(Some(&flag(
                true,
                vec![rule(vec![in_list("a", "x")], true)],
                false,
                true
            ))),
            Gate::Rules(_)
        ));
    }

    fn feature(key: &str) -> Feature {
        fixture_feature(
            key,
            AllocationType::Bool,
            MergePolicy::Max,
            &[&format!("{key}.use")],
        )
    }

    /// Grants flattened per (account, user, feature): inherited grants on sub-accounts, the
    /// latest end among active grants, expired ones kept with their expiry, revoked and
    /// scheduled ones left out (the scheduled start makes the snapshot stale), a feature off
    /// for everyone dropped, a `bool` false allocation not granting; each entry agrees with
    /// the index's own check at the snapshot's time.
    #[test]
    fn grants_flatten_to_one_entry_per_subject_and_feature() {
        let (sso, audit, off, zero) = (
            feature("sso"),
            feature("audit"),
            feature("off"),
            feature("zero"),
        );
        let org = plan(
            "org",
            vec![
                PlanFeature::bare("sso"),
                PlanFeature::bare("off"),
                PlanFeature::with("zero", Allocation::Bool(false)),
            ],
            true,
        );
        let basic = plan("basic", vec![PlanFeature::bare("audit")], false);
        let mut revoked = grant(&basic, "other", None, -2, None);
        revoked.revoked_at = Some(t(-1));
        let grants = vec![
            grant(&org, "root", None, -2, Some(5)),
            grant(&org, "root", None, -2, Some(3)),
            grant(&basic, "leaf", Some("ann"), -2, None),
            grant(&basic, "other", None, -3, Some(-1)),
            revoked,
            grant(&basic, "late", None, 2, None),
        ];
        let writer = IndexWriter::from_snapshot(
            Snapshot {
                user_meters: Default::default(),
                meters: Default::default(),
                features: vec![sso.clone(), audit.clone(), off.clone(), zero.clone()],
                plans: vec![org, basic],
                flags: vec![FeatureFlag {
                    feature_key: "off".into(),
                    ..flag(false, vec![], false, false)
                }],
                routes: vec![],
                tenants: vec![
                    ("root".into(), None),
                    ("leaf".into(), Some("root".into())),
                    ("other".into(), None),
                    ("late".into(), None),
                ],
                grants,
            },
            7,
        );
        let index = writer.current();
        let snapshot = index.vendor_snapshot(t(0)).unwrap();
        let entry = |tenant: &str, user: Option<&str>, feature: &Feature| {
            snapshot
                .entitlements
                .iter()
                .find(|e| {
                    e.tenant_id == tenant && e.user_id.as_deref() == user && e.feature == feature.id
                })
                .map(|e| e.expires_at)
        };
        assert_eq!(entry("root", None, &sso), Some(Some(t(5))));
        assert_eq!(entry("leaf", None, &sso), Some(Some(t(5))), "inherited");
        assert_eq!(entry("leaf", Some("ann"), &audit), Some(None));
        assert_eq!(entry("leaf", Some("ann"), &sso), None, "account level only");
        assert_eq!(entry("other", None, &audit), Some(Some(t(-1))), "expired");
        assert_eq!(entry("late", None, &audit), None, "scheduled");
        assert_eq!(entry("root", None, &off), None, "flag off for everyone");
        assert_eq!(entry("root", None, &zero), None, "bool false");
        assert_eq!(snapshot.entitlements.len(), 4);
        assert_eq!(snapshot.stale_from, Some(t(2)));
        // Five grants started (the revoked one too); the revision sits above them.
        assert_eq!(snapshot.offset, (7 << 20) | 5);
        assert!(snapshot.is_current(&index, t(1)));
        assert!(!snapshot.is_current(&index, t(2)));
        // One bundle per granted feature, holding it alone.
        let mut bundles: Vec<&str> = snapshot.bundles.iter().map(|b| b.id.as_str()).collect();
        bundles.sort_unstable();
        let mut expected = [sso.id.to_string(), audit.id.to_string()];
        expected.sort_unstable();
        assert_eq!(bundles, expected);
        // Each entry agrees with the check at the snapshot's time.
        for e in &snapshot.entitlements {
            let key = &snapshot
                .features
                .iter()
                .find(|f| f.id == e.feature)
                .unwrap()
                .key;
            let decision = index.check(
                &CheckRequest {
                    subject: Subject {
                        user_id: e.user_id.as_deref(),
                        ..Subject::account(&e.tenant_id)
                    },
                    target: Target::Feature(key),
                    requested: None,
                },
                t(0),
            );
            assert_eq!(
                decision.result,
                e.expires_at.is_none_or(|x| x > t(0)),
                "{e:?}"
            );
        }
    }
}
