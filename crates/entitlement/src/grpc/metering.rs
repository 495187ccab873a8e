//! `MeteringService`.

use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};

use super::checks::{allow_reason, justification, meter_reading};
use super::convert::{self, timestamp, uuid};
use super::{Handler, Result};
use crate::app::reservations::Settled;
use crate::domain::metering::{
    self as m, NewConsumption, NewCreditGrant, NewReservation, NewUsage, Rollover as DomainRollover,
};
use crate::domain::usage_history::{HistoryQuery, WindowSize};
use crate::domain::{Allocation, DomainError};

fn credit_grant(g: &m::CreditGrant) -> pb::CreditGrant {
    pb::CreditGrant {
        id: g.id.to_string(),
        tenant_id: g.tenant_id.clone(),
        feature_key: g.feature_key.clone(),
        amount: g.amount,
        priority: g.priority,
        effective_at: Some(timestamp(g.effective_at)),
        expires_at: g.expires_at.map(timestamp),
        rollover: Some(pb::Rollover {
            min: g.rollover.min,
            max: g.rollover.max,
        }),
        metadata: convert::json_to_struct(&g.metadata),
        voided_at: g.voided_at.map(timestamp),
        created_at: Some(timestamp(g.created_at)),
        user_id: g.user_id.clone(),
    }
}

fn reservation(r: &m::Reservation) -> pb::Reservation {
    let status = match r.status {
        m::ReservationStatus::Held => pb::ReservationStatus::Held,
        m::ReservationStatus::Refused => pb::ReservationStatus::Refused,
        m::ReservationStatus::Committed => pb::ReservationStatus::Committed,
        m::ReservationStatus::Released => pb::ReservationStatus::Released,
        m::ReservationStatus::Expired => pb::ReservationStatus::Expired,
    };
    pb::Reservation {
        id: r.id.to_string(),
        key: r.key.clone(),
        tenant_id: r.tenant_id.clone(),
        user_id: r.user_id.clone(),
        feature_key: r.feature_key.clone(),
        amount: r.amount,
        status: status.into(),
        expires_at: Some(timestamp(r.expires_at)),
        committed_amount: r.committed_amount,
        created_at: Some(timestamp(r.created_at)),
        settled_at: r.settled_at.map(timestamp),
    }
}

fn settled(s: Settled) -> (Option<pb::Reservation>, Option<pb::MeterReading>) {
    let owner = s.reservation.meter_owner.clone();
    let user = s.reservation.meter_user.clone();
    (
        Some(reservation(&s.reservation)),
        Some(owned(meter_reading(s.meter), owner, user)),
    )
}

/// A meter naming whose it is: a pool's owner, or the user whose own meter it is.
fn owned(meter: pb::MeterReading, owner: Option<String>, user: Option<String>) -> pb::MeterReading {
    pb::MeterReading {
        owner_tenant_id: owner,
        user_id: user,
        ..meter
    }
}

fn outcome(o: m::UsageOutcome) -> pb::UsageOutcome {
    match o {
        m::UsageOutcome::Recorded => pb::UsageOutcome::Recorded,
        m::UsageOutcome::Duplicate => pb::UsageOutcome::Duplicate,
        m::UsageOutcome::Late => pb::UsageOutcome::Late,
    }
}

fn meter_period(p: &crate::domain::usage_history::PeriodSummary) -> pb::MeterPeriod {
    pb::MeterPeriod {
        start: Some(timestamp(p.start)),
        end: Some(timestamp(p.end)),
        manual: p.manual,
        usage: p.usage,
        overage: p.overage,
        allowance: p.allowance,
        allowance_used: p.allowance_used,
        credits: p
            .credits
            .iter()
            .map(|c| pb::CreditClose {
                id: c.id.to_string(),
                remaining: c.remaining,
                carried: c.carried,
            })
            .collect(),
        carried_overage: p.carried_overage,
    }
}

fn window_size(raw: i32) -> Result<WindowSize> {
    let size = match pb::UsageWindowSize::try_from(raw) {
        Ok(pb::UsageWindowSize::Hour) => WindowSize::Hour,
        Ok(pb::UsageWindowSize::Day) => WindowSize::Day,
        Ok(pb::UsageWindowSize::Week) => WindowSize::Week,
        Ok(pb::UsageWindowSize::Month) => WindowSize::Month,
        Ok(pb::UsageWindowSize::Period) => WindowSize::Period,
        Ok(pb::UsageWindowSize::Unspecified) | Err(_) => {
            return Err(
                DomainError::invalid("window", "must be HOUR, DAY, WEEK, MONTH or PERIOD").into(),
            );
        }
    };
    Ok(size)
}

fn required_time(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<chrono::DateTime<chrono::Utc>> {
    let t = t.ok_or_else(|| DomainError::invalid(field, "is required"))?;
    Ok(convert::time(field, &t)?)
}

fn usage(index: usize, e: pb::UsageEvent) -> Result<NewUsage> {
    let at = e
        .timestamp
        .map(|t| convert::time(&format!("events[{index}].timestamp"), &t))
        .transpose()?;
    Ok(NewUsage {
        id: e.id,
        tenant_id: e.tenant_id,
        user_id: e.user_id,
        feature_key: e.feature_key,
        amount: e.amount,
        at,
        unique: e.unique,
    })
}

#[tonic::async_trait]
impl metering_service_server::MeteringService for Handler {
    async fn record_usage(
        &self,
        request: Request<RecordUsageRequest>,
    ) -> Result<Response<RecordUsageResponse>> {
        let events = request
            .into_inner()
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| usage(i, e))
            .collect::<Result<Vec<_>>>()?;
        let (outcomes, revision) = self.engine.record_usage(events).await?;
        Ok(Response::new(RecordUsageResponse {
            outcomes: outcomes.into_iter().map(|o| outcome(o).into()).collect(),
            revision,
        }))
    }

    async fn consume_usage(
        &self,
        request: Request<ConsumeUsageRequest>,
    ) -> Result<Response<ConsumeUsageResponse>> {
        let r = request.into_inner();
        let (answer, replayed) = self
            .engine
            .consume_usage(NewConsumption {
                id: r.id,
                tenant_id: r.tenant_id,
                user_id: r.user_id,
                feature_key: r.feature_key,
                amount: r.amount,
            })
            .await?;
        Ok(Response::new(ConsumeUsageResponse {
            consumed: answer.consumed,
            justification: justification(answer.justification).into(),
            allow_reason: allow_reason(answer.allow_reason).into(),
            meter: answer.meter.map(|m| {
                let (owner, user) = (answer.meter_owner.clone(), answer.meter_user.clone());
                owned(meter_reading(m), owner, user)
            }),
            replayed,
            revision: answer.revision,
        }))
    }

    async fn create_credit_grant(
        &self,
        request: Request<CreateCreditGrantRequest>,
    ) -> Result<Response<CreateCreditGrantResponse>> {
        let r = request.into_inner();
        let effective_at = r
            .effective_at
            .map(|t| convert::time("effective_at", &t))
            .transpose()?;
        let expires_at = r
            .expires_at
            .map(|t| convert::time("expires_at", &t))
            .transpose()?;
        let saved = self
            .engine
            .create_credit_grant(NewCreditGrant {
                tenant_id: r.tenant_id,
                feature_key: r.feature_key,
                amount: r.amount,
                priority: r.priority,
                effective_at,
                expires_at,
                rollover: r.rollover.map(|o| DomainRollover {
                    min: o.min,
                    max: o.max,
                }),
                metadata: convert::metadata(r.metadata),
                user_id: r.user_id,
            })
            .await?;
        Ok(Response::new(CreateCreditGrantResponse {
            credit_grant: Some(credit_grant(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn void_credit_grant(
        &self,
        request: Request<VoidCreditGrantRequest>,
    ) -> Result<Response<VoidCreditGrantResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let saved = self.engine.void_credit_grant(id).await?;
        Ok(Response::new(VoidCreditGrantResponse {
            credit_grant: Some(credit_grant(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn list_credit_grants(
        &self,
        request: Request<ListCreditGrantsRequest>,
    ) -> Result<Response<ListCreditGrantsResponse>> {
        let r = request.into_inner();
        let grants = self
            .engine
            .credit_grants(&r.tenant_id, r.feature_key.as_deref())
            .await?;
        Ok(Response::new(ListCreditGrantsResponse {
            credit_grants: grants.iter().map(credit_grant).collect(),
        }))
    }

    async fn get_meter(
        &self,
        request: Request<GetMeterRequest>,
    ) -> Result<Response<GetMeterResponse>> {
        let r = request.into_inner();
        if r.feature_key.is_empty() {
            return Err(DomainError::invalid("feature_key", "is required").into());
        }
        let view = self
            .engine
            .meter_view(
                &r.tenant_id,
                r.user_id.as_deref(),
                &r.feature_key,
                r.min_revision,
            )
            .await?;
        Ok(Response::new(GetMeterResponse {
            meter: Some(owned(meter_reading(view.reading), view.owner, view.user)),
            allowance: Some(convert::allocation(Some(Allocation::MaxCount(
                view.allowance,
            )))),
            credits: view
                .credits
                .into_iter()
                .map(|(id, remaining)| CreditRemaining {
                    id: id.to_string(),
                    remaining,
                })
                .collect(),
            revision: view.revision,
        }))
    }

    async fn get_usage_history(
        &self,
        request: Request<GetUsageHistoryRequest>,
    ) -> Result<Response<GetUsageHistoryResponse>> {
        let r = request.into_inner();
        if r.feature_key.is_empty() {
            return Err(DomainError::invalid("feature_key", "is required").into());
        }
        let query = HistoryQuery {
            from: required_time("from", r.from)?,
            to: required_time("to", r.to)?,
            window: window_size(r.window)?,
            tenant_id: r.tenant_id,
            feature_key: r.feature_key,
            user_id: r.user_id,
        };
        let history = self.engine.usage_history(&query).await?;
        Ok(Response::new(GetUsageHistoryResponse {
            aggregation: tenantry_proto::index_stream::aggregation(history.aggregation).into(),
            windows: history
                .windows
                .into_iter()
                .map(|w| pb::UsageWindow {
                    start: Some(timestamp(w.start)),
                    end: Some(timestamp(w.end)),
                    usage: w.usage,
                })
                .collect(),
        }))
    }

    async fn reset_meter(
        &self,
        request: Request<ResetMeterRequest>,
    ) -> Result<Response<ResetMeterResponse>> {
        let r = request.into_inner();
        if r.feature_key.is_empty() {
            return Err(DomainError::invalid("feature_key", "is required").into());
        }
        let saved = self
            .engine
            .reset_meter(&r.tenant_id, r.user_id.as_deref(), &r.feature_key)
            .await?;
        Ok(Response::new(ResetMeterResponse {
            closed_period: Some(meter_period(&saved.value.closed)),
            meter: Some(owned(meter_reading(saved.value.reading), None, r.user_id)),
            revision: saved.revision,
        }))
    }

    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveResponse>> {
        let r = request.into_inner();
        // Bounded before it becomes a duration: the domain refuses anything past 7 days.
        let ttl = chrono::TimeDelta::try_seconds(r.ttl_seconds.clamp(-1, i64::from(u32::MAX)))
            .unwrap_or_default();
        let (held, answer, replayed) = self
            .engine
            .reserve(NewReservation {
                id: r.id,
                tenant_id: r.tenant_id,
                user_id: r.user_id,
                feature_key: r.feature_key,
                amount: r.amount,
                ttl,
            })
            .await?;
        Ok(Response::new(ReserveResponse {
            reservation: Some(reservation(&held)),
            justification: justification(answer.justification).into(),
            allow_reason: allow_reason(answer.allow_reason).into(),
            meter: answer.meter.map(|m| {
                let (owner, user) = (answer.meter_owner.clone(), answer.meter_user.clone());
                owned(meter_reading(m), owner, user)
            }),
            replayed,
            revision: answer.revision,
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<CommitReservationRequest>,
    ) -> Result<Response<CommitReservationResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let done = self.engine.commit_reservation(id, r.amount).await?;
        let (replayed, revision) = (done.replayed, done.revision);
        let (reservation, meter) = settled(done);
        Ok(Response::new(CommitReservationResponse {
            reservation,
            meter,
            replayed,
            revision,
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<ReleaseReservationRequest>,
    ) -> Result<Response<ReleaseReservationResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let done = self.engine.release_reservation(id).await?;
        let (replayed, revision) = (done.replayed, done.revision);
        let (reservation, meter) = settled(done);
        Ok(Response::new(ReleaseReservationResponse {
            reservation,
            meter,
            revision,
            replayed,
        }))
    }

    async fn get_reservation(
        &self,
        request: Request<GetReservationRequest>,
    ) -> Result<Response<GetReservationResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let found = self.engine.reservation(id).await?;
        Ok(Response::new(GetReservationResponse {
            reservation: Some(reservation(&found)),
        }))
    }

    async fn list_meter_periods(
        &self,
        request: Request<ListMeterPeriodsRequest>,
    ) -> Result<Response<ListMeterPeriodsResponse>> {
        let r = request.into_inner();
        if r.feature_key.is_empty() {
            return Err(DomainError::invalid("feature_key", "is required").into());
        }
        let from = required_time("from", r.from)?;
        let to = required_time("to", r.to)?;
        let periods = self
            .engine
            .meter_periods(&r.tenant_id, r.user_id.as_deref(), &r.feature_key, from, to)
            .await?;
        Ok(Response::new(ListMeterPeriodsResponse {
            periods: periods.iter().map(meter_period).collect(),
        }))
    }

    async fn get_meter_balance(
        &self,
        request: Request<GetMeterBalanceRequest>,
    ) -> Result<Response<GetMeterBalanceResponse>> {
        let r = request.into_inner();
        if r.feature_key.is_empty() {
            return Err(DomainError::invalid("feature_key", "is required").into());
        }
        let from = required_time("from", r.from)?;
        let to = required_time("to", r.to)?;
        let points = self
            .engine
            .balance_points(&r.tenant_id, r.user_id.as_deref(), &r.feature_key, from, to)
            .await?;
        Ok(Response::new(GetMeterBalanceResponse {
            points: points.into_iter().map(balance_point).collect(),
        }))
    }
}

fn balance_point(p: crate::app::metering::balance::BalancePoint) -> pb::BalancePoint {
    use crate::app::metering::balance::PointKind as K;
    let kind = match p.kind {
        K::Usage => BalancePointKind::Usage,
        K::Consumption => BalancePointKind::Consumption,
        K::ReservationCommit => BalancePointKind::ReservationCommit,
        K::CreditEffective => BalancePointKind::CreditEffective,
        K::CreditVoided => BalancePointKind::CreditVoided,
        K::CreditExpired => BalancePointKind::CreditExpired,
        K::Reset => BalancePointKind::Reset,
        K::ManualReset => BalancePointKind::ManualReset,
    };
    pb::BalancePoint {
        at: Some(timestamp(p.at)),
        kind: kind.into(),
        id: p.id.unwrap_or_default(),
        meter: p.meter.map(meter_reading),
    }
}
