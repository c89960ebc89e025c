//! Presence as diffs (issue 17 point 4): `presence [{joined, left}]`.
//!
//! Sending the whole online list to everyone at every change costs
//! O(names) bytes per change per connection: one client signing in and out
//! in a loop made everyone download the list many times a second. Instead,
//! a sign-in or a departure only nudges the presence task, which after at
//! most [`INTERVAL`] compares the names online now with those it announced
//! last and emits what changed, once for all the changes in between, to
//! every signed-in connection. A name that arrived and left within one
//! interval is in neither list; nothing changed, nothing is sent. The whole
//! list goes only to whoever asks (`hello`, `online`).
//!
//! The same task tells [`Names`] when a name's last connection here left,
//! so its hold starts then.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtm_tokio::{RtmError, ServerHandle};
use serde_json::json;

use super::names::Names;

/// The shortest time between two presence events.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// This server's presence: nudged by sign-ins and departures.
pub struct Presence {
    /// A channel of one: nudges while one is waiting are dropped.
    nudge: tokio::sync::mpsc::Sender<()>,
    /// Names (with their key) that lost a connection since the last round.
    departed: Mutex<HashMap<String, String>>,
}

impl Presence {
    /// The presence of `server` (started once the server is: see [`Presence::start`]).
    pub fn new() -> (Arc<Presence>, Nudged) {
        let (nudge, nudged) = tokio::sync::mpsc::channel(1);
        let presence = Presence {
            nudge,
            departed: Mutex::new(HashMap::new()),
        };
        (Arc::new(presence), Nudged(nudged))
    }

    /// Something may have changed: an announcement within [`INTERVAL`].
    pub fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    /// A connection of `name` (signed in with `key`) is gone.
    pub fn departed(&self, name: &str, key: &str) {
        self.departed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), key.to_owned());
        self.nudge();
    }

    /// Runs the announcements for `server` until it shuts down.
    pub fn start(self: &Arc<Self>, server: ServerHandle, names: Names, nudged: Nudged) {
        let presence = self.clone();
        let Nudged(mut nudged) = nudged;
        tokio::spawn(async move {
            let mut announced = BTreeSet::new();
            while nudged.recv().await.is_some() {
                // Wait out the interval: every change in it goes in one event.
                tokio::time::sleep(INTERVAL).await;
                if server.is_shutting_down() {
                    break;
                }
                let now = online(&server);
                if let Err(err) = announce(&server, &announced, &now) {
                    tracing::warn!(%err, "presence not sent");
                }
                let departed = std::mem::take(
                    &mut *presence.departed.lock().unwrap_or_else(|e| e.into_inner()),
                );
                // Their last connection here left: their hold starts now
                // (off this task: Redis may be slow to answer).
                let gone: Vec<(String, String)> = departed
                    .into_iter()
                    .filter(|(name, _)| !now.contains(name))
                    .collect();
                if !gone.is_empty() {
                    let names = names.clone();
                    tokio::spawn(async move { names.released(&gone).await });
                }
                announced = now;
            }
        });
    }
}

/// The receiving end of the nudges, for [`Presence::start`].
pub struct Nudged(tokio::sync::mpsc::Receiver<()>);

/// Emits `presence [{joined, left}]` (sorted names) to every signed-in
/// connection, if anything changed from `before` to `now`.
fn announce(
    server: &ServerHandle,
    before: &BTreeSet<String>,
    now: &BTreeSet<String>,
) -> Result<(), RtmError> {
    let joined: Vec<&String> = now.difference(before).collect();
    let left: Vec<&String> = before.difference(now).collect();
    if joined.is_empty() && left.is_empty() {
        return Ok(());
    }
    let diff = json!({ "joined": joined, "left": left });
    server.emit("presence", |info| info.identity.is_some(), &(&diff,))?;
    Ok(())
}

/// The names of the users signed in on this server. Read from the server's
/// own connection table, so a tab closing mid-auth cannot leave a stale
/// name behind.
pub fn online(server: &ServerHandle) -> BTreeSet<String> {
    server
        .connections()
        .iter()
        .filter_map(|info| info.user_id().map(str::to_owned))
        .collect()
}

/// `(name, key)` of every name held by a connection here (one pair per name).
pub fn held(server: &ServerHandle) -> Vec<(String, String)> {
    let mut held: HashMap<String, String> = HashMap::new();
    for info in server.connections() {
        if let (Some(name), Some(key)) = (info.user_id(), info.authentication()["key"].as_str()) {
            held.entry(name.to_owned())
                .or_insert_with(|| key.to_owned());
        }
    }
    held.into_iter().collect()
}
