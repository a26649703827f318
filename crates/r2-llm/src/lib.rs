//! OpenAI-compatible generation client for r2 (planned: issue 4). Nothing here yet.
