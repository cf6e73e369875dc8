"""A Squall function: handler(event, context) returns what the caller gets back."""


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    context.logger.info(f"greeting {name}")
    return {"message": f"Hello, {name}!"}
