"""HL7 v2 report intake over MLLP (``radcheck hl7 listen``)."""

from app.hl7.listener import Hl7Listener, ListenerConfig, frame

__all__ = ["Hl7Listener", "ListenerConfig", "frame"]
