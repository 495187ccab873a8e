//! Metered features: usage periods and the per-period ledger of credits, usage and overage.
//! Pure computation over time and amounts; the index keeps the state it produces.

pub mod ledger;
pub mod meter;
pub mod period;
pub mod state;

pub use ledger::{Credit, Draw, Ledger, LedgerError, Rollover};
pub use meter::{
    Allowance, Checkpoint, CreditGrant, MAX_REPLAY_PERIODS, Meter, MeterError, MeterSpec, Reading,
    Usage,
};
pub use period::{PeriodError, PeriodWindow, Recurrence, UsagePeriod};
pub use state::{ALLOWANCE_ID, ALLOWANCE_PRIORITY, DrawError, Hold, MeterReading, MeterState};
