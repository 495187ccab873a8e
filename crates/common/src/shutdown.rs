//! A shutdown signal that many tasks can wait on.

use tokio::sync::watch;

/// Cloneable; every clone sees the same trigger. Servers stop accepting when it fires, and
/// long-lived streams (the change feed) end so draining can finish.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self { tx, rx }
    }

    /// Fires the signal; idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// A signal that fires when this one does, and can also be fired on its own without firing
    /// this one: a service stops its own background work when its server fails, while the
    /// process's other services (all-in-one mode) keep running.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        let (parent, forward) = (self.clone(), child.clone());
        let mut closed = child.rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = parent.wait() => forward.trigger(),
                // The child fired first: nothing left to forward.
                _ = closed.wait_for(|fired| *fired) => {}
            }
        });
        child
    }

    /// Fires on SIGTERM or SIGINT (Ctrl-C). Call once per process, inside the runtime.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown signal received");
            this.trigger();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_triggered());
        let waiter = tokio::spawn(async move { b.wait().await });
        a.trigger();
        waiter.await.unwrap();
        assert!(a.is_triggered());
        // Waiting after the fact returns at once.
        a.wait().await;
    }

    #[tokio::test]
    async fn a_child_follows_its_parent_but_not_the_other_way_round() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());

        let other = parent.child();
        parent.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), other.wait())
            .await
            .expect("child fires with its parent");
    }
}
