//! Namespaces and their options, and the hub's limits.

use crate::hub::QueueLimits;
use std::collections::HashMap;
use std::time::Duration;

/// What a namespace allows. A channel `chat:lobby` is in namespace `chat`; a channel without
/// a `:` is in the default namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// Publications kept per channel for history and recovery (0: none).
    pub history_size: usize,
    /// How long a publication stays in history.
    pub history_ttl: Duration,
    /// Whether subscribers can ask who else is subscribed.
    pub presence: bool,
    /// Whether subscribers get join and leave events.
    pub join_leave: bool,
    /// Whether clients may publish (the server API always may).
    pub allow_publish: bool,
    /// Whether clients without a token may subscribe (and publish, if allowed).
    pub allow_anonymous: bool,
}

impl Default for NamespaceOptions {
    /// Nothing kept, nothing extra, clients may not publish, tokens required.
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            presence: false,
            join_leave: false,
            allow_publish: false,
            allow_anonymous: false,
        }
    }
}

impl NamespaceOptions {
    /// The demo's chat rooms: history of 100 for 10 minutes, presence, join/leave, clients
    /// publish, anonymous allowed.
    pub fn chat() -> Self {
        Self {
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            presence: true,
            join_leave: true,
            allow_publish: true,
            allow_anonymous: true,
        }
    }
}

/// The hub's limits and namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Options of channels without a namespace.
    pub default_namespace: NamespaceOptions,
    /// Named namespaces. A channel in a namespace that is not listed is refused.
    pub namespaces: HashMap<String, NamespaceOptions>,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Unsent bytes queued for one connection before it counts as a slow consumer and is
    /// disconnected (close code 4008).
    pub max_queued_bytes: usize,
    /// Longest channel name, in bytes.
    pub max_channel_length: usize,
    /// Limits of the work queues (STOMP `/queue/...`).
    pub queue_limits: QueueLimits,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            default_namespace: NamespaceOptions::default(),
            namespaces: HashMap::new(),
            max_channels_per_connection: 128,
            max_queued_bytes: 4 << 20,
            max_channel_length: 255,
            queue_limits: QueueLimits::default(),
        }
    }
}

impl HubOptions {
    /// The options that apply to `channel`, or `None` for an unknown namespace.
    pub fn namespace_of(&self, channel: &str) -> Option<&NamespaceOptions> {
        match channel.split_once(':') {
            Some((ns, _)) => self.namespaces.get(ns),
            None => Some(&self.default_namespace),
        }
    }

    /// The namespace name of `channel` ("" for the default namespace).
    pub fn namespace_name(channel: &str) -> &str {
        channel.split_once(':').map_or("", |(ns, _)| ns)
    }
}
