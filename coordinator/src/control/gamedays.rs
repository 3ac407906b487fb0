//! `RunGameDay` and `ListGameDays`: a game day run on the coordinator
//! ([`crate::gameday::runner`]) and the game-day runs it recorded.

use std::pin::Pin;

use faultline_proto::v1;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{ControlService, Error};

pub type GameDayStream = Pin<Box<dyn Stream<Item = Result<v1::GameDayEvent, Status>> + Send>>;

/// Most game-day runs one `ListGameDays` returns.
const LIST_MAX: usize = 10_000;

pub(super) async fn run(
    c: &ControlService,
    req: Request<v1::RunGameDayRequest>,
) -> Result<Response<GameDayStream>, Status> {
    if c.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown.into());
    }
    let who = c.security.control_operator(&req)?;
    if let Some(why) = c.runs.stopped() {
        c.audit(&who, "gameday", "-", &format!("refused: {why}"));
        return Err(Error::Stopped(why).into());
    }
    let suite = req.into_inner().suite.ok_or(Error::NoSource)?;
    let suite = crate::gameday::Suite::from_wire(suite).map_err(Error::from)?;
    crate::gameday::runner::check(&suite).await?;
    let (tx, rx) = mpsc::channel(256);
    crate::gameday::runner::spawn(
        c,
        suite,
        crate::gameday::runner::Start {
            id: crate::gameday::runner::new_id(),
            who,
            schedule_id: None,
            events: Some(tx),
        },
    );
    Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
}

pub(super) async fn list(
    c: &ControlService,
    req: Request<v1::ListGameDaysRequest>,
) -> Result<Response<v1::ListGameDaysResponse>, Status> {
    c.security.control_caller(&req)?;
    let r = req.into_inner();
    let limit = match r.limit {
        0 => 20,
        n => (n as usize).min(LIST_MAX),
    };
    let name = (!r.name.is_empty()).then_some(r.name.as_str());
    let rows = c
        .store
        .gamedays(name, limit)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(v1::ListGameDaysResponse {
        runs: rows.into_iter().map(Into::into).collect(),
    }))
}
