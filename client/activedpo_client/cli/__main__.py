from activedpo_client.cli import app

app()
