//! markdown renderer
