//! Counting what each peer address holds open, up to a bound: the server's
//! connections per IP and handshakes per IP, and any listener an adapter
//! runs in front of it (rtm-tokio's HTTP server), with one implementation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// At most `max` of something (connections, handshakes) held open per peer
/// IP address at once. Cheap to clone: clones share the counts.
///
/// ```
/// use rtm_driver::rt::PerIpLimit;
/// let limit = PerIpLimit::new(2);
/// let ip = "192.0.2.7".parse().unwrap();
/// let first = limit.admit(ip).expect("1 of 2");
/// let second = limit.admit(ip).expect("2 of 2");
/// assert!(limit.admit(ip).is_none(), "a third is refused");
/// drop(first);
/// assert!(limit.admit(ip).is_some(), "one was given back");
/// # drop(second);
/// ```
#[derive(Clone)]
pub struct PerIpLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl std::fmt::Debug for PerIpLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerIpLimit")
            .field("max", &self.max)
            .field("open", &self.open())
            .finish()
    }
}

impl PerIpLimit {
    /// A limit of `max` per address (at least 1).
    pub fn new(max: usize) -> Self {
        PerIpLimit {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// The bound per address.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts one more for `ip` until the permit is dropped; `None` (nothing
    /// counted) when `ip` holds `max` already.
    pub fn admit(&self, ip: IpAddr) -> Option<IpPermit> {
        self.count(ip).then(|| IpPermit {
            ip,
            limit: self.clone(),
        })
    }

    /// What every address holds now, in all.
    pub fn open(&self) -> usize {
        self.lock().values().sum()
    }

    /// What `ip` holds now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }

    /// Counts one more for `ip`, to be given back with [`PerIpLimit::release`]
    /// (for holders that keep a flag, not a permit); `false` at the bound.
    pub(crate) fn count(&self, ip: IpAddr) -> bool {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back one counted for `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut open = self.lock();
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One counted against its address's [`PerIpLimit`], given back when dropped.
#[derive(Debug)]
pub struct IpPermit {
    ip: IpAddr,
    limit: PerIpLimit,
}

impl IpPermit {
    /// The address counted.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        self.limit.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_is_bounded_on_its_own_and_forgotten_at_zero() {
        let limit = PerIpLimit::new(1);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held_a = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none());
        let held_b = limit.admit(b).unwrap();
        assert_eq!((limit.open(), limit.open_from(a)), (2, 1));
        drop((held_a, held_b));
        assert_eq!(limit.open(), 0);
        assert!(
            limit.lock().is_empty(),
            "no entry kept for an address holding nothing"
        );
    }

    #[test]
    fn a_bound_of_zero_is_one() {
        let limit = PerIpLimit::new(0);
        assert_eq!(limit.max(), 1);
        assert!(limit.admit("::1".parse().unwrap()).is_some());
    }
}
