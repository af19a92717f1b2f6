package loglimit

// Flush logs the count of every kind with suppressed lines now.
func (h *Handler) Flush() { h.state.flush() }
