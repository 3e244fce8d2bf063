//! The incoming-funds simulator: registers expected payments and, if asked,
//! "receives" each one after a delay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::sim::{SimCore, lock};
use super::{
    BoxFuture, ConnectorError, FundsInstructions, FundsNotification, FundsRequest, IncomingFunds, SimConfig,
    SimControls,
};

#[derive(Default)]
struct State {
    expected: HashMap<String, (FundsRequest, FundsInstructions)>,
    registered: u64,
}

/// Simulated incoming funds.
pub struct FundsSimulator {
    core: SimCore,
    auto_pay: Option<(Duration, mpsc::Sender<FundsNotification>)>,
    state: Mutex<State>,
}

impl FundsSimulator {
    pub fn new(controls: SimControls, config: SimConfig) -> Self {
        FundsSimulator {
            core: SimCore::new("funds", config, controls),
            auto_pay: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Pays every expected payment in full `after` its first registration:
    /// a spawned task sends one [`FundsNotification`] per key on `notify`.
    /// The task waits for channel capacity (`send`, not `try_send`), so no
    /// notification is lost while the receiver lives; if the receiver is
    /// gone, the notification is dropped.
    pub fn with_auto_pay(mut self, after: Duration, notify: mpsc::Sender<FundsNotification>) -> Self {
        self.auto_pay = Some((after, notify));
        self
    }

    /// Registers the payment on the first call with `key`; later calls
    /// return the same instructions.
    fn expect_once(&self, key: &str, request: &FundsRequest) -> Result<(FundsInstructions, bool), ConnectorError> {
        let mut state = lock(&self.state);
        if let Some((first, instructions)) = state.expected.get(key) {
            if first != request {
                return Err(ConnectorError::Rejected("idempotency key reused with a different request".into()));
            }
            return Ok((instructions.clone(), false));
        }
        if request.amount == 0 {
            return Err(ConnectorError::Rejected("amount must be positive".into()));
        }
        state.registered += 1;
        let instructions = FundsInstructions { reference: format!("IN-{:010}", state.registered) };
        state.expected.insert(key.to_string(), (request.clone(), instructions.clone()));
        self.schedule_payment(request, &instructions);
        Ok((instructions, true))
    }

    fn schedule_payment(&self, request: &FundsRequest, instructions: &FundsInstructions) {
        let Some((after, notify)) = &self.auto_pay else { return };
        let (after, notify) = (*after, notify.clone());
        let notification = FundsNotification {
            order_id: request.order_id,
            amount: request.amount,
            reference: instructions.reference.clone(),
        };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if notify.send(notification).await.is_err() {
                tracing::debug!("simulated incoming payment dropped: no receiver");
            }
        });
    }
}

impl IncomingFunds for FundsSimulator {
    fn expect<'a>(
        &'a self,
        key: &'a str,
        request: &'a FundsRequest,
    ) -> BoxFuture<'a, Result<FundsInstructions, ConnectorError>> {
        Box::pin(self.core.call("expect", key, move || self.expect_once(key, request)))
    }
}
