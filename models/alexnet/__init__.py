"""AlexNet, as torchvision defines it."""

from codenn_convert.registry import ModelSpec, register_model

register_model(
    ModelSpec(
        name="alexnet",
        family="alexnet",
        torch_builder="codenn_convert.models.alexnet.torch_alexnet:alexnet",
        keras_builder="codenn_convert.models.alexnet.keras_alexnet:alexnet",
        input_size=(224, 224),
        # The last max-pool needs a 3x3 map: 63 -> 15 -> 7 -> 3 -> 1.
        min_input_size=(63, 63),
        num_params=61_100_840,
        default=True,
    )
)
