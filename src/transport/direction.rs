//! Which way bytes went: what the `--hex` dump, `--capture` files and `--pcap` records
//! all tag each chunk with. Its own module, below all three.

/// Which way bytes went, from sockit's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// sockit wrote them to the peer (`>`).
    Sent,
    /// sockit read them from the peer (`<`).
    Received,
}

impl Direction {
    /// The marker at the start of every line of a chunk.
    pub(crate) fn marker(self) -> char {
        match self {
            Direction::Sent => '>',
            Direction::Received => '<',
        }
    }

    /// "sent N bytes to" / "received N bytes from".
    pub(crate) fn words(self) -> (&'static str, &'static str) {
        match self {
            Direction::Sent => ("sent", "to"),
            Direction::Received => ("received", "from"),
        }
    }
}
