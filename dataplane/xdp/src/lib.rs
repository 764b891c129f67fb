//! AF_XDP I/O layer (in progress).
