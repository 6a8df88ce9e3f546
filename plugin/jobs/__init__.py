"""What the plugin asks the workers and what it does with the answers: prompts, AUTO-SEGMENT,
propagation and stack segmentation, prefetch and Encode stack. No Qt; network calls off the GUI thread.

Every job gets the shared state (:class:`plugin.jobs.context.JobContext`) when it is made and
takes one path (:func:`plugin.jobs.submit.submit`); :class:`plugin.jobs.controller.Controller`
puts them together for the widgets. No job imports the controller.
"""
