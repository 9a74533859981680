"""The mdmbot process (serve, HTTP front, scheduler, runtime, metrics, logs) and its adapters."""
