"""A stand-in for the course grading server: same routes, shapes, wordings and limits, plus faults."""

from kdq.course.fake_server.course import FakeCourse, Submission
from kdq.course.fake_server.evaluate import load_dataset
from kdq.course.fake_server.faults import Fault, parse_fault
from kdq.course.fake_server.server import FakeServer

__all__ = ["FakeCourse", "FakeServer", "Fault", "Submission", "load_dataset", "parse_fault"]
