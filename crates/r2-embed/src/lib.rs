//! Embedding backends for r2 (planned: issue 3). Nothing here yet.
