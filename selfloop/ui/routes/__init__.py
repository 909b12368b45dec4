"""The dashboard's routes by page family: loops (the list, a loop, its config, comparisons), iterations (an
iteration, its held-out answers, a prompt), labs, and the JSON the pages poll (api). Each module's `routes(site)`
returns its Starlette routes; app.py mounts them."""
