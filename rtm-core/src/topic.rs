//! Broker topics: `{ns}:user:{user_id}` and `{ns}:push:{event}:{tag}`.
//!
//! Letters, digits, `-`, `_` and `.` map into a topic unchanged; every other
//! byte of the UTF-8 encoding (including `:` and `%`) is written as `%XX`
//! (upper-case hex). The mapping is injective, so event `a:b` with tag `c`
//! (`ns:push:a%3Ab:c`) and event `a` with tag `b:c` (`ns:push:a:b%3Ac`) never
//! share a topic.

use std::fmt;
use std::sync::Arc;

/// A broker topic name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The topic of a user: Publish to that user travels on it.
    ///
    /// ```
    /// let t = rtm_core::Topic::user("chat", "alice@example.com");
    /// assert_eq!(t.as_str(), "chat:user:alice%40example.com");
    /// ```
    pub fn user(namespace: &str, user_id: &str) -> Topic {
        let mut s = String::with_capacity(namespace.len() + 6 + user_id.len());
        escape_into(&mut s, namespace);
        s.push_str(":user:");
        escape_into(&mut s, user_id);
        Topic(s.into())
    }

    /// The topic of a push subscription (event, tag).
    ///
    /// ```
    /// use rtm_core::Topic;
    /// assert_eq!(Topic::push("ns", "score", "match-7").as_str(), "ns:push:score:match-7");
    /// assert_ne!(Topic::push("ns", "a:b", "c"), Topic::push("ns", "a", "b:c"));
    /// ```
    pub fn push(namespace: &str, event: &str, tag: &str) -> Topic {
        let mut s = String::with_capacity(namespace.len() + 7 + event.len() + tag.len());
        escape_into(&mut s, namespace);
        s.push_str(":push:");
        escape_into(&mut s, event);
        s.push(':');
        escape_into(&mut s, tag);
        Topic(s.into())
    }

    /// The control topic of one server, on which it probes its own subscription.
    pub fn control(namespace: &str, server_id: &str) -> Topic {
        let mut s = String::new();
        escape_into(&mut s, namespace);
        s.push_str(":ctl:");
        escape_into(&mut s, server_id);
        Topic(s.into())
    }

    /// Wraps a topic name received from a broker.
    pub fn from_raw(name: &str) -> Topic {
        Topic(name.into())
    }

    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

fn escape_into(out: &mut String, part: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in part.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_map_unchanged() {
        assert_eq!(Topic::user("rtm", "u-1_x.y").as_str(), "rtm:user:u-1_x.y");
    }

    #[test]
    fn separators_and_escape_char_are_escaped() {
        assert_eq!(Topic::push("rtm", "a:b", "c").as_str(), "rtm:push:a%3Ab:c");
        assert_eq!(Topic::push("rtm", "a", "b:c").as_str(), "rtm:push:a:b%3Ac");
        assert_eq!(Topic::user("rtm", "%3A").as_str(), "rtm:user:%253A");
        assert_eq!(Topic::user("rtm", "é").as_str(), "rtm:user:%C3%A9");
    }
}
