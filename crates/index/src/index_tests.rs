//! Unit tests of the index's check semantics (one per rule of the module documentation).

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::*;
use crate::fixtures::{feature, grant, plan, t};
use crate::model::{
    AttributeType, Condition, ConditionOp, FeatureFlag, Limit, PlanFeature, Rule, Treatment,
};
use crate::writer::{IndexChange, IndexWriter, Snapshot};

fn count(n: u64) -> Option<Allocation> {
    Some(Allocation::MaxCount(Limit::Finite(n)))
}

fn cond(attribute: &str, op: ConditionOp, value: Value) -> Condition {
    Condition {
        attribute: attribute.into(),
        attribute_type: AttributeType::Custom,
        negate: false,
        op,
        value,
    }
}

struct Fx {
    writer: IndexWriter,
    root: &'static str,
    child: &'static str,
    leaf: &'static str,
    basic: Plan,
    pro: Plan,
    org: Plan,
    beta: Plan,
}

/// root ← child ← leaf. `org` inherits; `beta` is gated by a flag on attribute `tier`.
fn fixture() -> Fx {
    use AllocationType::{Bool, MaxCount};
    let features = vec![
        feature("sso", Bool, MergePolicy::Max, &["sso.read"]),
        feature("audit", Bool, MergePolicy::Max, &["audit.read", "sso.read"]),
        feature("seats", MaxCount, MergePolicy::Max, &[]),
        feature("storage", MaxCount, MergePolicy::Sum, &[]),
        feature("beta", Bool, MergePolicy::Max, &[]),
    ];
    let basic = plan(
        "basic",
        vec![
            PlanFeature::bare("sso"),
            PlanFeature {
                feature_key: "seats".into(),
                allocation: count(5),
            },
            PlanFeature {
                feature_key: "storage".into(),
                allocation: count(10),
            },
        ],
        false,
    );
    let pro = plan(
        "pro",
        vec![
            PlanFeature::bare("audit"),
            PlanFeature {
                feature_key: "seats".into(),
                allocation: count(20),
            },
            PlanFeature {
                feature_key: "storage".into(),
                allocation: count(100),
            },
        ],
        false,
    );
    let org = plan(
        "org",
        vec![
            PlanFeature::bare("sso"),
            PlanFeature {
                feature_key: "storage".into(),
                allocation: count(1),
            },
        ],
        true,
    );
    let beta = plan("beta", vec![PlanFeature::bare("beta")], false);
    let flag = FeatureFlag {
        id: Uuid::new_v4(),
        feature_key: "beta".into(),
        name: "beta".into(),
        description: None,
        on: true,
        off_treatment: Treatment::False,
        default_treatment: Treatment::False,
        rules: vec![Rule {
            description: None,
            conditions: vec![cond("tier", ConditionOp::InList, json!({"list": ["gold"]}))],
            treatment: Treatment::True,
        }],
    };
    let (root, child, leaf) = ("root", "child", "leaf");
    let writer = IndexWriter::from_snapshot(
        Snapshot {
            user_meters: Default::default(),
            meters: Default::default(),
            features,
            plans: vec![basic.clone(), pro.clone(), org.clone(), beta.clone()],
            flags: vec![flag],
            routes: vec![],
            tenants: vec![
                (root.into(), None),
                (child.into(), Some(root.into())),
                (leaf.into(), Some(child.into())),
            ],
            grants: vec![],
        },
        1,
    );
    Fx {
        writer,
        root,
        child,
        leaf,
        basic,
        pro,
        org,
        beta,
    }
}

struct Ask<'a> {
    tenant: String,
    user: Option<&'a str>,
    perms: Vec<String>,
    attrs: Option<Map<String, Value>>,
}

impl<'a> Ask<'a> {
    fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            user: None,
            perms: vec![],
            attrs: None,
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            tenant_id: &self.tenant,
            user_id: self.user,
            permissions: &self.perms,
            attributes: self.attrs.as_ref(),
        }
    }

    fn run(
        &self,
        index: &EntitlementIndex,
        target: Target<'_>,
        requested: Option<u64>,
        at: i64,
    ) -> Decision {
        index.check(
            &CheckRequest {
                subject: self.subject(),
                target,
                requested,
            },
            t(at),
        )
    }

    fn feature(&self, index: &EntitlementIndex, key: &str, at: i64) -> Decision {
        self.run(index, Target::Feature(key), None, at)
    }
}

#[test]
fn unknown_tenant_and_feature() {
    let fx = fixture();
    let idx = fx.writer.current();
    let d = Ask::new("nobody").feature(&idx, "sso", 1);
    assert_eq!(d.justification, Some(Justification::TenantNotFound));
    let mut bad = Ask::new(fx.root);
    bad.tenant = "root-but-not-quite".into();
    assert_eq!(
        bad.feature(&idx, "sso", 1).justification,
        Some(Justification::TenantNotFound)
    );
    let d = Ask::new(fx.root).feature(&idx, "nope", 1);
    assert_eq!(
        (d.result, d.justification),
        (false, Some(Justification::MissingFeature))
    );
    let d = Ask::new(fx.root).feature(&idx, "sso", 1);
    assert_eq!(d.justification, Some(Justification::MissingFeature));
    assert_eq!(d.revision, 1);
}

#[test]
fn account_user_and_inherited_levels() {
    let mut fx = fixture();
    let account = grant(&fx.basic, fx.child, None, 0, None);
    let user = grant(&fx.pro, fx.child, Some("u1"), 0, None);
    let inherited = grant(&fx.org, fx.root, None, 0, None);
    let not_inherited = grant(&fx.pro, fx.root, None, 0, None);
    let idx = fx.writer.apply([
        IndexChange::UpsertGrant(account.clone()),
        IndexChange::UpsertGrant(user),
        IndexChange::UpsertGrant(inherited.clone()),
        IndexChange::UpsertGrant(not_inherited),
    ]);
    let child = Ask::new(fx.child);
    let d = child.feature(&idx, "sso", 1);
    assert!(d.result);
    assert_eq!(d.decided_by.unwrap().grant_id, Some(account.id));
    assert_eq!(d.decided_by.unwrap().level, GrantLevel::Account);
    // audit is only in the user's grant and in root's non-inheriting grant
    assert_eq!(
        child.feature(&idx, "audit", 1).justification,
        Some(Justification::MissingFeature)
    );
    let mut u1 = Ask::new(fx.child);
    u1.user = Some("u1");
    let d = u1.feature(&idx, "audit", 1);
    assert!(d.result);
    assert_eq!(d.decided_by.unwrap().level, GrantLevel::User);
    // leaf inherits org from root (depth 2) but nothing from child's non-inheriting basic
    let leaf = Ask::new(fx.leaf);
    let d = leaf.feature(&idx, "sso", 1);
    assert!(d.result);
    assert_eq!(
        d.decided_by.unwrap(),
        DecidedBy {
            grant_id: Some(inherited.id),
            plan_id: fx.org.id,
            level: GrantLevel::Ancestor { depth: 2 }
        }
    );
    assert_eq!(idx.ancestor_at(fx.leaf, 2), Some(fx.root));
    assert_eq!(idx.ancestor_at(fx.leaf, 0), None);
    assert!(!leaf.feature(&idx, "seats", 1).result);
}

#[test]
fn why_not_expired_revoked_not_started_and_next_change() {
    let mut fx = fixture();
    let expired = grant(&fx.basic, fx.root, None, 0, Some(2));
    let idx = fx.writer.apply([IndexChange::UpsertGrant(expired.clone())]);
    let root = Ask::new(fx.root);
    let d = root.feature(&idx, "sso", 1);
    assert!(d.result);
    assert_eq!(d.next_change_at, Some(t(2)));
    // the boundary: expiry is exclusive
    let d = root.feature(&idx, "sso", 2);
    assert_eq!(d.justification, Some(Justification::PlanExpired));
    assert_eq!(d.decided_by.unwrap().grant_id, Some(expired.id));
    assert_eq!(d.next_change_at, None);

    let mut revoked = grant(&fx.basic, fx.child, None, 0, None);
    revoked.revoked_at = Some(t(3));
    let scheduled = grant(&fx.basic, fx.leaf, None, 5, Some(9));
    let idx = fx.writer.apply([
        IndexChange::UpsertGrant(revoked),
        IndexChange::UpsertGrant(scheduled),
    ]);
    let child = Ask::new(fx.child);
    assert!(child.feature(&idx, "sso", 2).result);
    assert_eq!(
        child.feature(&idx, "sso", 3).justification,
        Some(Justification::PlanRevoked)
    );
    let leaf = Ask::new(fx.leaf);
    let d = leaf.feature(&idx, "sso", 4);
    assert_eq!(d.justification, Some(Justification::NotStarted));
    assert_eq!(d.next_change_at, Some(t(5)));
    let d = leaf.feature(&idx, "sso", 5);
    assert!(d.result);
    assert_eq!(d.next_change_at, Some(t(9)));

    // expired wins over revoked and not-started when several explain the refusal
    let mut r2 = grant(&fx.basic, fx.root, None, 0, None);
    r2.revoked_at = Some(t(1));
    let later = grant(&fx.basic, fx.root, None, 50, None);
    let idx = fx.writer.apply([
        IndexChange::UpsertGrant(r2),
        IndexChange::UpsertGrant(later),
    ]);
    let d = root.feature(&idx, "sso", 10);
    assert_eq!(d.justification, Some(Justification::PlanExpired));
    assert_eq!(d.next_change_at, Some(t(50)));
}

#[test]
fn merge_policies_limits_and_decider() {
    let mut fx = fixture();
    let b = grant(&fx.basic, fx.child, None, 0, None);
    let p = grant(&fx.pro, fx.child, None, 0, None);
    let o = grant(&fx.org, fx.root, None, 0, None);
    let idx = fx.writer.apply([
        IndexChange::UpsertGrant(b),
        IndexChange::UpsertGrant(p.clone()),
        IndexChange::UpsertGrant(o),
    ]);
    let child = Ask::new(fx.child);
    let seats = child.feature(&idx, "seats", 1);
    assert_eq!(seats.allocation, count(20));
    assert_eq!(seats.decided_by.unwrap().grant_id, Some(p.id));
    let storage = child.feature(&idx, "storage", 1);
    assert_eq!(
        storage.allocation,
        count(111),
        "sum of 10 + 100 + inherited 1"
    );
    assert_eq!(storage.decided_by.unwrap().grant_id, Some(p.id));

    let d = child.run(&idx, Target::Feature("seats"), Some(20), 1);
    assert!(d.result);
    let d = child.run(&idx, Target::Feature("seats"), Some(21), 1);
    assert_eq!(
        (d.result, d.justification),
        (false, Some(Justification::LimitExceeded))
    );
    assert_eq!(d.allocation, count(20));
    // a requested amount means nothing to a bool feature
    assert!(
        child
            .run(&idx, Target::Feature("sso"), Some(1000), 1)
            .result
    );

    let mut unlimited = fx.pro.clone();
    unlimited.features[1].allocation = None; // bare max_count key = unlimited
    let idx = fx.writer.apply([IndexChange::UpsertPlan(unlimited)]);
    let d = child.run(&idx, Target::Feature("seats"), Some(u64::MAX), 1);
    assert!(d.result);
    assert_eq!(d.allocation, Some(Allocation::MaxCount(Limit::Unlimited)));
}

#[test]
fn feature_flags_gate_by_attributes() {
    let mut fx = fixture();
    let idx = fx.writer.apply([IndexChange::UpsertGrant(grant(
        &fx.beta, fx.root, None, 0, None,
    ))]);
    let mut ask = Ask::new(fx.root);
    assert_eq!(
        ask.feature(&idx, "beta", 1).justification,
        Some(Justification::FeatureFlagOff)
    );
    ask.attrs = json!({"tier": "gold"}).as_object().cloned();
    assert!(ask.feature(&idx, "beta", 1).result);
    // without a grant the flag alone entitles nothing
    let mut other = Ask::new(fx.child);
    other.attrs = ask.attrs.clone();
    assert_eq!(
        other.feature(&idx, "beta", 1).justification,
        Some(Justification::MissingFeature)
    );
    // flag switched off with off treatment false
    let flag = FeatureFlag {
        id: Uuid::new_v4(),
        feature_key: "sso".into(),
        name: String::new(),
        description: None,
        on: false,
        off_treatment: Treatment::False,
        default_treatment: Treatment::True,
        rules: vec![],
    };
    let idx = fx.writer.apply([
        IndexChange::UpsertFlag(flag.clone()),
        IndexChange::UpsertGrant(grant(&fx.basic, fx.root, None, 0, None)),
    ]);
    assert_eq!(
        ask.feature(&idx, "sso", 1).justification,
        Some(Justification::FeatureFlagOff)
    );
    let idx = fx.writer.apply([IndexChange::DeleteFlag { id: flag.id }]);
    assert!(ask.feature(&idx, "sso", 1).result);
}

#[test]
fn permissions_follow_frontegg() {
    let mut fx = fixture();
    let idx = fx.writer.apply([IndexChange::UpsertGrant(grant(
        &fx.pro, fx.root, None, 0, None,
    ))]);
    let mut ask = Ask::new(fx.root);
    let perm = |ask: &Ask<'_>, key: &str| ask.run(&idx, Target::Permission(key), None, 1);
    assert_eq!(
        perm(&ask, "sso.read").justification,
        Some(Justification::MissingPermission)
    );
    ask.perms = vec!["sso.read".into(), "free.thing".into()];
    // linked to no feature: allowed
    let d = perm(&ask, "free.thing");
    assert!(d.result && d.decided_by.is_none());
    assert_eq!(d.allow_reason, Some(AllowReason::UngatedPermission));
    assert_eq!(d.feature, None);
    // linked to audit (entitled through pro) and sso (not): allowed via audit
    let d = perm(&ask, "sso.read");
    assert!(d.result);
    assert_eq!(d.decided_by.unwrap().plan_id, fx.pro.id);
    assert_eq!(d.allow_reason, Some(AllowReason::Grant));
    assert_eq!(d.feature.and_then(|f| idx.feature_key(f)), Some("audit"));
    // A held pattern grants what the gateway's and the tenant service's rule grants.
    ask.perms = vec!["sso.*".into()];
    let d = perm(&ask, "sso.read");
    assert!(d.result);
    assert_eq!(d.feature.and_then(|f| idx.feature_key(f)), Some("audit"));
    ask.perms = vec!["sso".into()];
    assert_eq!(
        perm(&ask, "sso.read").justification,
        Some(Justification::MissingPermission)
    );
    ask.perms = vec!["audit.read".into()];
    let mut idx2 = fx.writer.apply([IndexChange::DeletePlan { id: fx.pro.id }]);
    let d = ask.run(&idx2, Target::Permission("audit.read"), None, 1);
    assert_eq!(d.justification, Some(Justification::MissingFeature));
    assert_eq!(d.allow_reason, None);
    assert_eq!(d.feature.and_then(|f| idx2.feature_key(f)), Some("audit"));
    idx2 = fx.writer.apply([IndexChange::UpsertPlan(fx.pro.clone())]);
    assert!(
        ask.run(&idx2, Target::Permission("audit.read"), None, 1)
            .result
    );
}

fn route(method: &str, path: &str, policy: RoutePolicy) -> Route {
    Route {
        id: Uuid::new_v4(),
        method: method.into(),
        path: path.into(),
        policy,
        description: None,
    }
}

#[test]
fn routes_most_specific_wins() {
    let mut fx = fixture();
    let idx = fx.writer.apply([
        IndexChange::UpsertRoute(route("*", "/api/**", RoutePolicy::Allow)),
        IndexChange::UpsertRoute(route("*", "/api/admin/*", RoutePolicy::Deny)),
        IndexChange::UpsertRoute(route(
            "GET",
            "/api/admin/audit",
            RoutePolicy::Require {
                features: vec!["audit".into()],
                permissions: vec!["audit.read".into()],
            },
        )),
        IndexChange::UpsertRoute(route("*", "/api/admin/audit", RoutePolicy::Deny)),
        IndexChange::UpsertGrant(grant(&fx.pro, fx.root, None, 0, Some(7))),
    ]);
    let mut ask = Ask::new(fx.root);
    let r = |ask: &Ask<'_>, m: &str, p: &str| {
        ask.run(&idx, Target::Route { method: m, path: p }, None, 1)
    };
    let d = r(&ask, "POST", "/api/things/1");
    assert!(d.result);
    assert_eq!(d.allow_reason, Some(AllowReason::RouteAllow));
    assert_eq!((d.decided_by, d.feature), (None, None));
    // longer than the stack split: matched on the raw path
    let long = format!("/api{}", "/x".repeat(40));
    assert!(r(&ask, "GET", &long).result);
    let long_admin = format!("/api/admin{}", "/x".repeat(40));
    assert!(
        r(&ask, "GET", &long_admin).result,
        "/api/admin/* takes one segment only"
    );
    assert_eq!(
        r(&ask, "POST", "/api/admin/users").justification,
        Some(Justification::RouteDenied)
    );
    assert_eq!(
        r(&ask, "GET", "/other").justification,
        Some(Justification::MissingRoute)
    );
    // GET /api/admin/audit: the GET route beats the `*` one on method
    assert_eq!(
        r(&ask, "GET", "/api/admin/audit").justification,
        Some(Justification::MissingPermission)
    );
    ask.perms = vec!["audit.read".into()];
    let d = r(&ask, "get", "/api/admin/audit?x=1");
    assert!(d.result);
    assert_eq!(d.allow_reason, Some(AllowReason::RouteRequirementsMet));
    assert_eq!(d.decided_by.unwrap().plan_id, fx.pro.id);
    assert_eq!(d.feature.and_then(|f| idx.feature_key(f)), Some("audit"));
    assert_eq!(d.next_change_at, Some(t(7)));
    assert_eq!(
        r(&ask, "DELETE", "/api/admin/audit").justification,
        Some(Justification::RouteDenied)
    );
}

#[test]
fn plan_targeting_entitles_without_a_grant() {
    let mut fx = fixture();
    let mut targeted = fx.basic.clone();
    targeted.rules = vec![Rule {
        description: None,
        conditions: vec![cond(
            "seats",
            ConditionOp::GreaterThanEqual,
            json!({"number": 50}),
        )],
        treatment: Treatment::True,
    }];
    let idx = fx.writer.apply([IndexChange::UpsertPlan(targeted)]);
    let mut ask = Ask::new(fx.leaf);
    assert!(!ask.feature(&idx, "sso", 1).result);
    ask.attrs = json!({"seats": 60}).as_object().cloned();
    let d = ask.feature(&idx, "sso", 1);
    assert!(d.result);
    assert_eq!(d.decided_by.unwrap().level, GrantLevel::Targeting);
    assert_eq!(d.decided_by.unwrap().grant_id, None);
    assert_eq!(d.allow_reason, Some(AllowReason::Grant));
    assert_eq!(d.feature.and_then(|f| idx.feature_key(f)), Some("sso"));
}

#[test]
fn listing_what_if_and_batch() {
    let mut fx = fixture();
    let b = grant(&fx.basic, fx.child, None, 0, None);
    let idx = fx.writer.apply([
        IndexChange::UpsertGrant(b.clone()),
        IndexChange::UpsertGrant(grant(&fx.org, fx.root, None, 0, None)),
    ]);
    let ask = Ask::new(fx.child);
    let listed = idx.account_entitlements(&ask.subject(), t(1)).unwrap();
    let keys: Vec<(&str, Allocation)> = listed
        .iter()
        .map(|e| (e.key.as_str(), e.allocation))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("seats", count(5).unwrap()),
            ("sso", Allocation::Bool(true)),
            ("storage", count(11).unwrap()),
        ]
    );
    let json = serde_json::to_value(listed[0].allocation).unwrap();
    assert_eq!(json, json!({"type": "max_count", "value": 5}));

    let w = idx
        .what_if(
            &ask.subject(),
            &[Hypothetical::grant_plan(fx.pro.id, false)],
            t(1),
            None,
        )
        .unwrap();
    let gained: Vec<&str> = w.gained.iter().map(|c| c.key.as_str()).collect();
    let changed: Vec<&str> = w.changed.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(gained, vec!["audit"]);
    assert_eq!(changed, vec!["seats", "storage"]);
    assert!(w.lost.is_empty());
    let w = idx
        .what_if(
            &ask.subject(),
            &[Hypothetical::RevokePlan {
                plan_id: fx.basic.id,
            }],
            t(1),
            None,
        )
        .unwrap();
    let lost: Vec<&str> = w.lost.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(lost, vec!["seats"]);
    assert_eq!(
        w.changed[0].after,
        count(1),
        "storage falls back to the inherited 1"
    );
    let w2 = idx
        .what_if(
            &ask.subject(),
            &[Hypothetical::RevokeGrant { grant_id: b.id }],
            t(1),
            None,
        )
        .unwrap();
    assert_eq!(w, w2);
    assert!(matches!(
        idx.what_if(
            &ask.subject(),
            &[Hypothetical::RevokeGrant {
                grant_id: Uuid::new_v4()
            }],
            t(1),
            None
        ),
        Err(IndexError::NotFound { kind: "grant", .. })
    ));
    assert!(matches!(
        idx.what_if(
            &ask.subject(),
            &[Hypothetical::grant_plan(Uuid::new_v4(), false)],
            t(1),
            None
        ),
        Err(IndexError::NotFound { kind: "plan", .. })
    ));
    assert!(
        idx.account_entitlements(&Subject::account("x"), t(1))
            .is_err()
    );

    let tenant = fx.child;
    let requests: Vec<CheckRequest<'_>> = ["sso", "audit", "seats"]
        .iter()
        .map(|k| CheckRequest {
            subject: Subject::account(tenant),
            target: Target::Feature(k),
            requested: None,
        })
        .collect();
    let results: Vec<bool> = idx
        .check_batch(&requests, t(1))
        .iter()
        .map(|d| d.result)
        .collect();
    assert_eq!(results, vec![true, false, true]);
}

#[test]
fn what_if_applies_several_changes_in_order() {
    let mut fx = fixture();
    let b = grant(&fx.basic, fx.child, None, 0, None);
    let idx = fx.writer.apply([
        IndexChange::UpsertGrant(b.clone()),
        IndexChange::UpsertGrant(grant(&fx.org, fx.root, None, 0, None)),
    ]);
    let ask = Ask::new(fx.child);
    let keys = |list: &[FeatureChange]| -> Vec<(String, Option<Allocation>)> {
        list.iter().map(|c| (c.key.clone(), c.after)).collect()
    };
    // Swap basic for pro: seats 5 -> 20, storage 11 (sum with inherited 1) -> 101, audit
    // gained, sso kept through the inherited org plan.
    let swap = idx
        .what_if(
            &ask.subject(),
            &[
                Hypothetical::RevokePlan {
                    plan_id: fx.basic.id,
                },
                Hypothetical::grant_plan(fx.pro.id, false),
            ],
            t(1),
            None,
        )
        .unwrap();
    assert_eq!(
        keys(&swap.gained),
        vec![("audit".into(), Some(Allocation::Bool(true)))]
    );
    assert_eq!(
        keys(&swap.changed),
        vec![("seats".into(), count(20)), ("storage".into(), count(101))]
    );
    assert!(swap.lost.is_empty());

    // Order matters: a plan granted and then revoked leaves nothing behind, while revoking
    // first and granting after keeps the grant.
    let granted_then_revoked = idx
        .what_if(
            &ask.subject(),
            &[
                Hypothetical::grant_plan(fx.pro.id, false),
                Hypothetical::RevokePlan { plan_id: fx.pro.id },
            ],
            t(1),
            None,
        )
        .unwrap();
    assert_eq!(granted_then_revoked, WhatIf::default());
    let revoked_then_granted = idx
        .what_if(
            &ask.subject(),
            &[
                Hypothetical::RevokePlan { plan_id: fx.pro.id },
                Hypothetical::grant_plan(fx.pro.id, false),
            ],
            t(1),
            None,
        )
        .unwrap();
    assert_eq!(
        keys(&revoked_then_granted.gained),
        vec![("audit".into(), Some(Allocation::Bool(true)))]
    );

    // Revoking the one grant and the plan again is the same as revoking the plan; a
    // hypothetical grant starting later (or already expired) gives nothing now.
    let revoke_both = idx
        .what_if(
            &ask.subject(),
            &[
                Hypothetical::RevokeGrant { grant_id: b.id },
                Hypothetical::RevokePlan {
                    plan_id: fx.basic.id,
                },
                Hypothetical::GrantPlan {
                    plan_id: fx.pro.id,
                    to_user: false,
                    starts_at: Some(t(5)),
                    expires_at: None,
                },
            ],
            t(1),
            None,
        )
        .unwrap();
    let lost: Vec<&str> = revoke_both.lost.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(lost, vec!["seats"]);
    assert!(revoke_both.gained.is_empty());

    // A user-level hypothetical grant counts for the user only.
    let mut user = Ask::new(fx.child);
    user.user = Some("alice");
    let w = idx
        .what_if(
            &user.subject(),
            &[Hypothetical::grant_plan(fx.pro.id, true)],
            t(1),
            None,
        )
        .unwrap();
    assert_eq!(
        keys(&w.gained),
        vec![("audit".into(), Some(Allocation::Bool(true)))]
    );

    // Bad lists are refused whole.
    assert!(matches!(
        idx.what_if(&ask.subject(), &[], t(1), None),
        Err(IndexError::InvalidArgument { .. })
    ));
    let too_many = vec![Hypothetical::grant_plan(fx.pro.id, false); MAX_WHAT_IF_CHANGES + 1];
    assert!(idx.what_if(&ask.subject(), &too_many, t(1), None).is_err());
    assert!(matches!(
        idx.what_if(
            &ask.subject(),
            &[
                Hypothetical::grant_plan(fx.pro.id, false),
                Hypothetical::RevokeGrant {
                    grant_id: Uuid::new_v4()
                },
            ],
            t(1),
            None
        ),
        Err(IndexError::NotFound { kind: "grant", .. })
    ));
    assert!(matches!(
        idx.what_if(
            &ask.subject(),
            &[Hypothetical::GrantPlan {
                plan_id: fx.pro.id,
                to_user: false,
                starts_at: Some(t(3)),
                expires_at: Some(t(2)),
            }],
            t(1),
            None
        ),
        Err(IndexError::InvalidArgument { .. })
    ));
}

#[test]
fn explain_reports_targeting_and_the_matched_route() {
    let mut fx = fixture();
    let mut targeted = fx.pro.clone();
    targeted.rules = vec![Rule {
        description: None,
        conditions: vec![cond("tier", ConditionOp::InList, json!({"list": ["gold"]}))],
        treatment: Treatment::True,
    }];
    let allow = route("GET", "/reports/**", RoutePolicy::Allow);
    let export = route("GET", "/reports/*/export", RoutePolicy::Deny);
    let idx = fx.writer.apply([
        IndexChange::UpsertPlan(targeted),
        IndexChange::UpsertGrant(grant(&fx.pro, fx.child, None, 0, None)),
        IndexChange::UpsertGrant(grant(&fx.basic, fx.child, None, 0, None)),
        IndexChange::UpsertRoute(allow.clone()),
        IndexChange::UpsertRoute(export.clone()),
    ]);
    let mut ask = Ask::new(fx.child);
    let flags = |ask: &Ask<'_>| -> Vec<(Uuid, bool)> {
        idx.explain_grants(&ask.subject(), Some("audit"), t(1))
            .iter()
            .map(|g| (g.plan_id, g.targeted))
            .collect()
    };
    let mut expected = vec![(fx.pro.id, false), (fx.basic.id, false)];
    expected.sort_by_key(|&(plan, _)| plan);
    let mut got = flags(&ask);
    got.sort_by_key(|&(plan, _)| plan);
    assert_eq!(got, expected);
    ask.attrs = json!({"tier": "gold"}).as_object().cloned();
    let mut got = flags(&ask);
    got.sort_by_key(|&(plan, _)| plan);
    let mut expected = vec![(fx.pro.id, true), (fx.basic.id, false)];
    expected.sort_by_key(|&(plan, _)| plan);
    assert_eq!(got, expected);

    assert_eq!(
        idx.matched_route("GET", "/reports/7/export"),
        Some(export.id)
    );
    assert_eq!(idx.matched_route("get", "/reports/7"), Some(allow.id));
    assert_eq!(idx.matched_route("POST", "/reports/7"), None);
    assert_eq!(idx.matched_route("GET", "/other"), None);
}

#[test]
fn target_from_parts_needs_exactly_one() {
    assert_eq!(
        Target::from_parts(Some("a"), None, None).unwrap(),
        Target::Feature("a")
    );
    assert!(Target::from_parts(None, None, None).is_err());
    assert!(Target::from_parts(Some("a"), Some("b"), None).is_err());
    assert_eq!(
        Target::from_parts(None, None, Some(("GET", "/"))).unwrap(),
        Target::Route {
            method: "GET",
            path: "/"
        }
    );
}

#[test]
fn compact_grant_is_small_and_shared_index_keeps_newest() {
    assert_eq!(std::mem::size_of::<CompactGrant>(), 48);
    let mut fx = fixture();
    let shared = SharedIndex::new(fx.writer.current());
    let newer = fx.writer.apply([]);
    shared.store(Arc::clone(&newer));
    shared.store(Arc::new(EntitlementIndex::empty()));
    assert_eq!(shared.load().revision(), newer.revision());
    let mut g = grant(&fx.basic, fx.root, None, 0, None);
    g.user_id = Some("u".into());
    let idx = fx.writer.apply([IndexChange::UpsertGrant(g)]);
    let est = idx.memory_estimate();
    assert_eq!((est.tenants, est.grants), (3, 1));
    assert!(est.bytes > 0);
}

mod metered {
    use super::*;
    use crate::metering::{
        ALLOWANCE_PRIORITY, Credit, MeterState, Recurrence, Rollover, UsagePeriod,
    };
    use crate::model::{Aggregation, Metering};

    fn calls(soft_limit: bool) -> Feature {
        let mut f = feature("calls", AllocationType::Metered, MergePolicy::Max, &[]);
        f.metering = Some(Metering {
            unit: "call".into(),
            aggregation: Aggregation::Sum,
            period: UsagePeriod::new(Recurrence::DAY, t(0)),
            soft_limit,
            carry_overage: false,
        });
        f
    }

    /// `acme` holds a plan issuing 100 calls a day (when `planned`), with `used` drawn today.
    fn index(soft_limit: bool, planned: bool, used: i64, credit: Option<i64>) -> IndexWriter {
        let feature = calls(soft_limit);
        let spec = feature.metering.as_ref().unwrap().spec();
        let p = plan(
            "api",
            vec![PlanFeature {
                feature_key: "calls".into(),
                allocation: count(100),
            }],
            false,
        );
        let mut state = MeterState::open(&spec, t(1)).unwrap();
        if let Some(amount) = credit {
            state.add_credit(Credit {
                id: Uuid::from_u128(9),
                priority: ALLOWANCE_PRIORITY,
                effective_at: t(0),
                expires_at: None,
                voided_at: None,
                balance: amount,
                rollover: Rollover::NONE,
            });
        }
        let allowance = if planned { 100 } else { 0 };
        state
            .draw(&spec, t(1), used, &|_| Limit::Finite(allowance))
            .unwrap();
        let grants = if planned {
            vec![grant(&p, "acme", None, -1, None)]
        } else {
            vec![]
        };
        IndexWriter::from_snapshot(
            Snapshot {
                user_meters: Default::default(),
                features: vec![feature.clone()],
                plans: vec![p],
                flags: vec![],
                routes: vec![],
                tenants: vec![("acme".into(), None)],
                grants,
                meters: vec![("acme".into(), feature.id, state)],
            },
            1,
        )
    }

    fn check(w: &IndexWriter, requested: Option<u64>) -> Decision {
        w.current().check(
            &CheckRequest {
                subject: Subject::account("acme"),
                target: Target::Feature("calls"),
                requested,
            },
            t(2),
        )
    }

    #[test]
    fn a_metered_check_answers_from_the_balance_with_the_period() {
        let d = check(&index(false, true, 60, None), Some(40));
        assert!(d.result);
        assert_eq!(d.allow_reason, Some(AllowReason::Grant));
        let meter = d.meter.unwrap();
        assert_eq!(
            (meter.balance, meter.usage, meter.overage),
            (Some(40), 60, 0)
        );
        assert_eq!(meter.period_end, t(24));
        assert_eq!(
            d.next_change_at,
            Some(t(24)),
            "the reset changes the answer"
        );
        // The allocation is the amount issued each period, not what is left.
        assert_eq!(d.allocation, count(100));
    }

    #[test]
    fn a_hard_limit_says_why_it_refuses() {
        let partly = check(&index(false, true, 60, None), Some(41));
        assert_eq!(
            (partly.result, partly.justification),
            (false, Some(Justification::InsufficientBalance))
        );
        let spent = check(&index(false, true, 100, None), None);
        assert_eq!(
            (spent.result, spent.justification),
            (false, Some(Justification::UsageLimitReached))
        );
        assert_eq!(spent.meter.unwrap().balance, Some(0));
    }

    #[test]
    fn a_soft_limit_allows_past_the_balance_and_says_so() {
        let d = check(&index(true, true, 130, None), Some(5));
        assert_eq!(
            (d.result, d.allow_reason),
            (true, Some(AllowReason::SoftLimitOverage))
        );
        assert_eq!(d.meter.unwrap().overage, 30);
    }

    #[test]
    fn credits_alone_entitle_while_they_last() {
        let d = check(&index(false, false, 5, Some(20)), Some(15));
        assert_eq!(
            (d.result, d.allow_reason),
            (true, Some(AllowReason::Credits))
        );
        assert_eq!(d.meter.unwrap().balance, Some(15));
        let none = check(&index(false, false, 0, None), None);
        assert_eq!(
            (none.result, none.justification),
            (false, Some(Justification::MissingFeature))
        );
    }

    #[test]
    fn a_top_up_on_a_plan_managed_limit_adds_to_it() {
        let d = check(&index(false, true, 100, Some(50)), Some(50));
        assert!(d.result);
        assert_eq!(d.meter.unwrap().balance, Some(50));
    }

    #[test]
    fn a_meter_update_replaces_the_state_and_checks_see_it() {
        let mut w = index(false, true, 0, None);
        assert_eq!(check(&w, None).meter.unwrap().balance, Some(100));
        let feature = w.current().catalog_feature("calls").unwrap().0.clone();
        let spec = feature.metering.as_ref().unwrap().spec();
        let mut state = MeterState::open(&spec, t(1)).unwrap();
        state
            .draw(&spec, t(1), 100, &|_| Limit::Finite(100))
            .unwrap();
        w.apply([IndexChange::UpsertMeter {
            user_id: None,
            tenant_id: "acme".into(),
            feature_id: feature.id,
            state: Box::new(state),
        }]);
        assert_eq!(
            check(&w, None).justification,
            Some(Justification::UsageLimitReached)
        );
    }

    /// `org` ← `team` ← `squad`, and `solo` beside them: `org` holds `pool` (100 calls a day,
    /// inherited by sub-accounts) with 60 drawn on its meter; `own` (10 a day) inherits not.
    struct Pool {
        w: IndexWriter,
        feature: Feature,
        pool: Plan,
        own: Plan,
        pool_grant: Grant,
    }

    fn pooled() -> Pool {
        let feature = calls(false);
        let spec = feature.metering.as_ref().unwrap().spec();
        let allocate = |key: &str, n: u64, inherit: bool| {
            plan(
                key,
                vec![PlanFeature {
                    feature_key: "calls".into(),
                    allocation: count(n),
                }],
                inherit,
            )
        };
        let (pool, own) = (allocate("pool", 100, true), allocate("own", 10, false));
        let mut state = MeterState::open(&spec, t(1)).unwrap();
        state
            .draw(&spec, t(1), 60, &|_| Limit::Finite(100))
            .unwrap();
        let pool_grant = grant(&pool, "org", None, -1, None);
        let w = IndexWriter::from_snapshot(
            Snapshot {
                user_meters: Default::default(),
                features: vec![feature.clone()],
                plans: vec![pool.clone(), own.clone()],
                flags: vec![],
                routes: vec![],
                tenants: vec![
                    ("org".into(), None),
                    ("team".into(), Some("org".into())),
                    ("squad".into(), Some("team".into())),
                    ("solo".into(), None),
                ],
                grants: vec![pool_grant.clone()],
                meters: vec![("org".into(), feature.id, state)],
            },
            1,
        );
        Pool {
            w,
            feature,
            pool,
            own,
            pool_grant,
        }
    }

    fn check_of(w: &IndexWriter, tenant: &str, requested: Option<u64>) -> Decision {
        w.current().check(
            &CheckRequest {
                subject: Subject::account(tenant),
                target: Target::Feature("calls"),
                requested,
            },
            t(2),
        )
    }

    #[test]
    fn sub_accounts_without_their_own_allocation_answer_the_pool_of_the_ancestor() {
        let p = pooled();
        let idx = p.w.current();
        for (tenant, depth) in [("team", 1), ("squad", 2)] {
            let d = check_of(&p.w, tenant, Some(40));
            assert!(d.result, "{tenant}");
            let meter = d.meter.unwrap();
            assert_eq!((meter.balance, meter.usage), (Some(40), 60), "{tenant}");
            assert_eq!(d.meter_pool, Some(depth), "{tenant}");
            assert_eq!(idx.ancestor_at(tenant, depth), Some("org"));
            assert_eq!(d.allocation, count(100), "the pool's allowance");
            assert_eq!(
                idx.meter_owner(tenant, None, "calls", t(2)),
                Some(("org", None))
            );
            let over = check_of(&p.w, tenant, Some(41));
            assert_eq!(over.justification, Some(Justification::InsufficientBalance));
        }
        let own = check_of(&p.w, "org", None);
        assert_eq!((own.meter_pool, own.meter.unwrap().usage), (None, 60));
        assert_eq!(
            idx.meter_owner("org", None, "calls", t(2)),
            Some(("org", None))
        );
        // Issued to the pool's meter only: a sub-account's own meter gets nothing.
        assert_eq!(
            idx.issued_allowance("org", None, "calls", t(2)),
            Limit::Finite(100)
        );
        assert_eq!(
            idx.issued_allowance("team", None, "calls", t(2)),
            Limit::Finite(0)
        );
        // Outside the tree: its own (empty) meter.
        assert_eq!(
            idx.meter_owner("solo", None, "calls", t(2)),
            Some(("solo", None))
        );
        assert!(!check_of(&p.w, "solo", None).result);
    }

    #[test]
    fn an_account_with_its_own_allocation_draws_only_on_its_own_meter() {
        let mut p = pooled();
        p.w.apply([IndexChange::UpsertGrant(grant(
            &p.own, "team", None, -1, None,
        ))]);
        let idx = p.w.current();
        let team = check_of(&p.w, "team", None);
        assert_eq!(team.meter_pool, None);
        let meter = team.meter.unwrap();
        // Its own 10, not merged with the pool's 100 (merge policy MAX would say 100).
        assert_eq!((meter.balance, meter.usage), (Some(10), 0));
        assert_eq!(team.allocation, count(10));
        assert_eq!(
            idx.meter_owner("team", None, "calls", t(2)),
            Some(("team", None))
        );
        assert_eq!(
            idx.issued_allowance("team", None, "calls", t(2)),
            Limit::Finite(10)
        );
        // Below it, the nearest ancestor with an own allocation that inherits is still org
        // (team's own plan does not inherit).
        assert_eq!(
            idx.meter_owner("squad", None, "calls", t(2)),
            Some(("org", None))
        );
        assert_eq!(check_of(&p.w, "squad", None).meter_pool, Some(2));
    }

    #[test]
    fn the_nearest_pool_wins_and_re_parenting_or_revoking_moves_the_owner_at_once() {
        let mut p = pooled();
        // team gets a pool of its own: squad draws on team's, not org's.
        let team_pool = grant(&p.pool, "team", None, -1, None);
        p.w.apply([IndexChange::UpsertGrant(team_pool.clone())]);
        assert_eq!(
            p.w.current().meter_owner("squad", None, "calls", t(2)),
            Some(("team", None))
        );
        let d = check_of(&p.w, "squad", None);
        assert_eq!(
            (
                d.meter_pool,
                d.meter.unwrap().usage,
                d.meter.unwrap().balance
            ),
            (Some(1), 0, Some(100))
        );
        // Moved under solo (no allocation): squad has none.
        p.w.apply([IndexChange::UpsertTenant {
            id: "squad".into(),
            parent: Some("solo".into()),
        }]);
        assert_eq!(
            p.w.current().meter_owner("squad", None, "calls", t(2)),
            Some(("squad", None))
        );
        assert!(!check_of(&p.w, "squad", None).result);
        // Back under team, and team's pool revoked: org's pool again.
        let mut revoked = team_pool;
        revoked.revoked_at = Some(t(1));
        p.w.apply([
            IndexChange::UpsertTenant {
                id: "squad".into(),
                parent: Some("team".into()),
            },
            IndexChange::UpsertGrant(revoked),
        ]);
        assert_eq!(
            p.w.current().meter_owner("squad", None, "calls", t(2)),
            Some(("org", None))
        );
        assert_eq!(check_of(&p.w, "squad", None).meter.unwrap().usage, 60);
        // org's pool revoked too: nobody's.
        let mut revoked = p.pool_grant.clone();
        revoked.revoked_at = Some(t(1));
        p.w.apply([IndexChange::UpsertGrant(revoked)]);
        assert_eq!(
            p.w.current().meter_owner("squad", None, "calls", t(2)),
            Some(("squad", None))
        );
        let d = check_of(&p.w, "squad", None);
        assert_eq!(
            (d.result, d.justification),
            (false, Some(Justification::PlanRevoked))
        );
    }

    #[test]
    fn a_consumption_decides_on_the_pool_state_it_was_given() {
        let p = pooled();
        let spec = p.feature.metering.as_ref().unwrap().spec();
        let mut state = MeterState::open(&spec, t(1)).unwrap();
        state
            .draw(&spec, t(1), 95, &|_| Limit::Finite(100))
            .unwrap();
        let idx = p.w.current();
        let d = idx
            .meter_decision("team", None, "calls", Some(&state), Some(10), t(2))
            .unwrap();
        assert_eq!(
            (d.result, d.justification, d.meter_pool),
            (false, Some(Justification::InsufficientBalance), Some(1))
        );
        let read = idx.meter_check("squad", None, "calls", t(2)).unwrap();
        assert_eq!(
            (read.meter.unwrap().balance, read.meter_pool),
            (Some(40), Some(2))
        );
    }

    #[test]
    fn a_users_own_grant_gives_it_a_meter_of_its_own_and_other_users_draw_on_the_account() {
        // `u1` of `team` holds `own` (10 a day): its own meter, issued 10; `u2` holds nothing
        // and draws where a write for the account does (org's pool).
        let mut p = pooled();
        let user_grant = grant(&p.own, "team", Some("u1"), -1, None);
        p.w.apply([IndexChange::UpsertGrant(user_grant.clone())]);
        let user_check = |w: &IndexWriter, user: &str| {
            w.current().check(
                &CheckRequest {
                    subject: Subject::user("team", user),
                    target: Target::Feature("calls"),
                    requested: None,
                },
                t(2),
            )
        };
        let idx = p.w.current();
        let own = user_check(&p.w, "u1");
        assert_eq!((own.meter_user, own.meter_pool), (true, None));
        assert_eq!(own.allocation, count(10));
        assert_eq!(
            own.meter.map(|m| (m.usage, m.balance)),
            Some((0, Some(10))),
            "never written: fresh"
        );
        assert_eq!(
            idx.meter_owner("team", Some("u1"), "calls", t(2)),
            Some(("team", Some("u1")))
        );
        assert_eq!(
            idx.meter_owner("team", Some("u2"), "calls", t(2)),
            Some(("org", None))
        );
        assert_eq!(
            idx.issued_allowance("team", Some("u1"), "calls", t(2)),
            Limit::Finite(10)
        );
        assert_eq!(
            idx.issued_allowance("team", None, "calls", t(2)),
            Limit::Finite(0),
            "the account's own meter is issued nothing by a user's grant"
        );
        let other = user_check(&p.w, "u2");
        assert_eq!((other.meter_user, other.meter_pool), (false, Some(1)));
        assert_eq!(other.meter.unwrap().usage, 60);

        // The user's meter as written: the user's checks read it, nobody else's do.
        let spec = p.feature.metering.as_ref().unwrap().spec();
        let mut state = MeterState::open(&spec, t(1)).unwrap();
        state.draw(&spec, t(1), 7, &|_| Limit::Finite(10)).unwrap();
        p.w.apply([IndexChange::UpsertMeter {
            tenant_id: "team".into(),
            user_id: Some("u1".into()),
            feature_id: p.feature.id,
            state: Box::new(state.clone()),
        }]);
        let idx = p.w.current();
        assert_eq!(user_check(&p.w, "u1").meter.unwrap().balance, Some(3));
        assert_eq!(idx.meter("team", Some("u1"), p.feature.id), Some(&state));
        assert_eq!(idx.meter("team", None, p.feature.id), None);
        assert_eq!(user_check(&p.w, "u2").meter.unwrap().usage, 60);
        let d = idx
            .meter_decision("team", Some("u1"), "calls", Some(&state), Some(4), t(2))
            .unwrap();
        assert_eq!(
            (d.result, d.justification, d.meter_user),
            (false, Some(Justification::InsufficientBalance), true)
        );

        // The grant gone, the user draws on the pool again; its meter stays readable.
        p.w.apply([IndexChange::DeleteGrant { id: user_grant.id }]);
        let idx = p.w.current();
        assert_eq!(idx.meter("team", Some("u1"), p.feature.id), Some(&state));
        assert_eq!(
            idx.meter_owner("team", Some("u1"), "calls", t(2)),
            Some(("org", None))
        );
        let back = user_check(&p.w, "u1");
        assert_eq!((back.meter_user, back.meter.unwrap().usage), (false, 60));
        assert_eq!(idx.user_meters("team").count(), 1);
        // Kept on the user's entry, not the account node: accounts without users' meters
        // pay nothing for them.
        assert_eq!(size_of::<crate::index::TenantNode>(), 64);
    }
}
