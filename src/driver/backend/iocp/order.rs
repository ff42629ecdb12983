//! Stream sends in order with the shutdown of their write side.
//!
//! Winsock completes a socket's overlapped sends in the order they were issued, but
//! `shutdown(2)` is synchronous: run while a send waits for room, `SD_SEND` would take
//! effect before the bytes of that send. So a `shutdown(Write)` issued while stream sends
//! of its socket are in the kernel is held here until the last of them completes, as the
//! other backends order it (`OpDesc::is_ordered_write`); `shutdown(Both)` (which aborts a
//! writer stuck on a peer that does not read) and `shutdown(Read)` run at once.

use std::collections::{HashMap, VecDeque};

use crate::platform::RawFd;

/// Per socket: the keys of its stream sends in the kernel, and the shutdowns held behind
/// them (key, `how`).
#[derive(Default)]
struct Queue {
    sends: Vec<usize>,
    held: VecDeque<(usize, i32)>,
}

/// Stream sends in the kernel and the shutdowns held behind them, by socket.
#[derive(Default)]
pub(super) struct SendOrder {
    sockets: HashMap<RawFd, Queue>,
}

impl SendOrder {
    /// Stream send `key` of `fd` went into the kernel.
    pub(super) fn send_started(&mut self, fd: RawFd, key: usize) {
        self.sockets.entry(fd).or_default().sends.push(key);
    }

    /// Stream send `key` of `fd` completed; returns the shutdowns it releases (those held
    /// while no send of the socket remains in the kernel).
    pub(super) fn send_done(&mut self, fd: RawFd, key: usize) -> Vec<(usize, i32)> {
        let Some(q) = self.sockets.get_mut(&fd) else {
            return Vec::new();
        };
        q.sends.retain(|&k| k != key);
        if !q.sends.is_empty() {
            return Vec::new();
        }
        let released = q.held.drain(..).collect();
        self.sockets.remove(&fd);
        released
    }

    /// Holds shutdown `key` of `fd` if stream sends of the socket are in the kernel (or
    /// shutdowns already wait behind them); `false` if it can run now.
    pub(super) fn hold(&mut self, fd: RawFd, key: usize, how: i32) -> bool {
        match self.sockets.get_mut(&fd) {
            Some(q) if !q.sends.is_empty() || !q.held.is_empty() => {
                q.held.push_back((key, how));
                true
            }
            _ => false,
        }
    }

    /// Whether a shutdown of the write side of `fd` is held: stream sends issued now fail
    /// as after it.
    pub(super) fn write_shut(&self, fd: RawFd) -> bool {
        self.sockets.get(&fd).is_some_and(|q| !q.held.is_empty())
    }

    /// The stream sends of `fd` in the kernel.
    pub(super) fn sends(&self, fd: RawFd) -> &[usize] {
        self.sockets.get(&fd).map_or(&[], |q| &q.sends)
    }

    /// Takes held shutdown `key` out (its future was dropped or its token cancelled);
    /// `false` if it is not held.
    pub(super) fn unhold(&mut self, key: usize) -> bool {
        for q in self.sockets.values_mut() {
            if let Some(i) = q.held.iter().position(|&(k, _)| k == key) {
                q.held.remove(i);
                return true;
            }
        }
        false
    }
}
